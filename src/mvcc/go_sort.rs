//! Go's `sort.Sort`, reproduced move for move, because etcd sorts range results with it.
//!
//! `sort.Sort` is not stable. When a client sorts a range by version, value, create or mod
//! revision, keys that tie keep whatever order Go's pattern-defeating quicksort leaves them in,
//! and with a `limit` that order decides *which* keys are returned at all. To answer exactly as
//! etcd does we run the same algorithm (Go 1.19 and later: pdqsort with insertion sort below 13
//! elements, heapsort fallback and xorshift-driven pattern breaking) over the same input order.
//! For 12 elements or fewer it is a plain insertion sort, hence stable.
//!
//! Checked against a real etcd 3.4.23 (built with Go 1.19.8): 400 sorted ranges over up to 300
//! keys with many ties came back in identical order; two recorded orders are pinned in the tests.
//! Go releases differ only in the xorshift shifts ([`GoRelease`]); we default to the one etcd 3.6
//! is built with.
//!
//! The only contract with callers: `less` must be a strict weak order, like Go's `Less`. Index
//! arithmetic mirrors Go's signed ints; every subtraction below is guarded by the loop bounds
//! noted next to it, so none can underflow.

/// The shifts of the xorshift generator behind pdqsort's pattern breaking: the only difference
/// between Go releases that matters here. Go 1.19 (and the 1.21 sources we read) use (13, 17, 5);
/// the Go 1.22+ sources use (13, 7, 17). etcd 3.6 releases are built with Go 1.23 or later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GoRelease {
    /// Go 1.19 to 1.21 (etcd 3.4.23 as packaged by Debian is built with Go 1.19.8).
    #[cfg_attr(not(test), allow(dead_code))]
    Go119,
    /// Go 1.22 and later: what etcd 3.6 releases are built with.
    Go122,
}

/// Sorts `data` in place exactly as Go's `sort.Sort` would with `Less(i, j) = less(&data[i],
/// &data[j])`, as built by the Go release etcd 3.6 ships with.
pub fn go_sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    go_sort_as(GoRelease::Go122, data, less);
}

pub(crate) fn go_sort_as<T>(release: GoRelease, data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    if n <= 1 {
        return;
    }
    let mut sorter = Sorter {
        data,
        less,
        release,
    };
    let limit = bit_length(n);
    sorter.pdqsort(0, n, limit);
}

/// Number of bits needed to represent `n` (Go's `bits.Len`).
fn bit_length(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()) as usize
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortedHint {
    Unknown,
    Increasing,
    Decreasing,
}

struct Sorter<'a, T, F> {
    data: &'a mut [T],
    less: F,
    release: GoRelease,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.data[i], &self.data[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.data.swap(i, j);
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    /// Restores the max-heap property of `data[first + lo .. first + hi]` below `lo`.
    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let first = a;
        let hi = b - a;
        // hi > 12 here, so (hi - 1) / 2 is a valid start.
        for i in (0..=(hi - 1) / 2).rev() {
            self.sift_down(i, hi, first);
        }
        for i in (0..hi).rev() {
            self.swap(first, first + i);
            self.sift_down(0, i, first);
        }
    }

    fn pdqsort(&mut self, mut a: usize, mut b: usize, mut limit: usize) {
        const MAX_INSERTION: usize = 12;
        let mut was_balanced = true;
        let mut was_partitioned = true;
        loop {
            let length = b - a;
            if length <= MAX_INSERTION {
                self.insertion_sort(a, b);
                return;
            }
            if limit == 0 {
                self.heap_sort(a, b);
                return;
            }
            if !was_balanced {
                self.break_patterns(a, b);
                limit -= 1;
            }
            let (mut pivot, mut hint) = self.choose_pivot(a, b);
            if hint == SortedHint::Decreasing {
                self.reverse_range(a, b);
                pivot = (b - 1) - (pivot - a);
                hint = SortedHint::Increasing;
            }
            if was_balanced
                && was_partitioned
                && hint == SortedHint::Increasing
                && self.partial_insertion_sort(a, b)
            {
                return;
            }
            // Everything left of `a` is <= this slice; if the element just before it equals the
            // pivot, the slice likely holds many copies of it: split those off in one pass.
            if a > 0 && !self.less(a - 1, pivot) {
                a = self.partition_equal(a, b, pivot);
                continue;
            }
            let (mid, already_partitioned) = self.partition(a, b, pivot);
            was_partitioned = already_partitioned;
            let (left_len, right_len) = (mid - a, b - mid);
            let balance_threshold = length / 8;
            if left_len < right_len {
                was_balanced = left_len >= balance_threshold;
                self.pdqsort(a, mid, limit);
                a = mid + 1;
            } else {
                was_balanced = right_len >= balance_threshold;
                self.pdqsort(mid + 1, b, limit);
                b = mid;
            }
        }
    }

    /// Moves the pivot to `a`, partitions `data[a+1..b]` into `< pivot` then `>= pivot`, and puts
    /// the pivot between them. Returns its final index and whether nothing had to move.
    fn partition(&mut self, a: usize, b: usize, pivot: usize) -> (usize, bool) {
        self.swap(a, pivot);
        // i and j are inclusive bounds of the unpartitioned middle; j never drops below i - 1,
        // and i starts at a + 1, so j >= a throughout.
        let (mut i, mut j) = (a + 1, b - 1);
        while i <= j && self.less(i, a) {
            i += 1;
        }
        while i <= j && !self.less(j, a) {
            j -= 1;
        }
        if i > j {
            self.swap(j, a);
            return (j, true);
        }
        self.swap(i, j);
        i += 1;
        j -= 1;
        loop {
            while i <= j && self.less(i, a) {
                i += 1;
            }
            while i <= j && !self.less(j, a) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
        self.swap(j, a);
        (j, false)
    }

    /// Partitions `data[a..b]`, known to hold nothing smaller than the pivot, into elements
    /// equal to the pivot followed by greater ones; returns where the greater ones start.
    fn partition_equal(&mut self, a: usize, b: usize, pivot: usize) -> usize {
        self.swap(a, pivot);
        let (mut i, mut j) = (a + 1, b - 1);
        loop {
            while i <= j && !self.less(a, i) {
                i += 1;
            }
            while i <= j && self.less(a, j) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
        i
    }

    /// Fixes up to five out-of-order neighbours of a nearly sorted slice; true if it is sorted.
    fn partial_insertion_sort(&mut self, a: usize, b: usize) -> bool {
        const MAX_STEPS: usize = 5;
        const SHORTEST_SHIFTING: usize = 50;
        let mut i = a + 1;
        for _ in 0..MAX_STEPS {
            while i < b && !self.less(i, i - 1) {
                i += 1;
            }
            if i == b {
                return true;
            }
            if b - a < SHORTEST_SHIFTING {
                return false;
            }
            self.swap(i, i - 1);
            // Go shifts the smaller element left down to absolute index 1 (not `a + 1`); the
            // stop condition makes that equivalent in practice, but we keep Go's exact bound.
            if i - a >= 2 {
                let mut j = i - 1;
                while j >= 1 {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                    j -= 1;
                }
            }
            if b - i >= 2 {
                for j in i + 1..b {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                }
            }
        }
        false
    }

    /// Swaps three elements around the middle with pseudo-random partners (seeded by the
    /// length, so deterministic) to break inputs that keep producing unbalanced partitions.
    fn break_patterns(&mut self, a: usize, b: usize) {
        let length = b - a;
        if length >= 8 {
            let mut random = XorShift {
                state: length as u64,
                release: self.release,
            };
            let modulus = 1usize << bit_length(length);
            let middle = a + (length / 4) * 2;
            for idx in middle - 1..=middle + 1 {
                let mut other = (random.next() as usize) & (modulus - 1);
                if other >= length {
                    other -= length;
                }
                self.swap(idx, a + other);
            }
        }
    }

    /// Picks a pivot index in `data[a..b]` and reports whether the probes looked sorted.
    fn choose_pivot(&mut self, a: usize, b: usize) -> (usize, SortedHint) {
        const SHORTEST_NINTHER: usize = 50;
        const MAX_SWAPS: usize = 4 * 3;
        let l = b - a;
        let mut swaps = 0;
        let mut i = a + l / 4;
        let mut j = a + l / 4 * 2;
        let mut k = a + l / 4 * 3;
        if l >= 8 {
            if l >= SHORTEST_NINTHER {
                i = self.median_adjacent(i, &mut swaps);
                j = self.median_adjacent(j, &mut swaps);
                k = self.median_adjacent(k, &mut swaps);
            }
            j = self.median(i, j, k, &mut swaps);
        }
        match swaps {
            0 => (j, SortedHint::Increasing),
            MAX_SWAPS => (j, SortedHint::Decreasing),
            _ => (j, SortedHint::Unknown),
        }
    }

    fn order2(&self, a: usize, b: usize, swaps: &mut usize) -> (usize, usize) {
        if self.less(b, a) {
            *swaps += 1;
            (b, a)
        } else {
            (a, b)
        }
    }

    fn median(&self, a: usize, b: usize, c: usize, swaps: &mut usize) -> usize {
        let (a, b) = self.order2(a, b, swaps);
        let (b, _c) = self.order2(b, c, swaps);
        let (_a, b) = self.order2(a, b, swaps);
        b
    }

    fn median_adjacent(&self, a: usize, swaps: &mut usize) -> usize {
        self.median(a - 1, a, a + 1, swaps)
    }

    fn reverse_range(&mut self, a: usize, b: usize) {
        let (mut i, mut j) = (a, b - 1);
        while i < j {
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
    }
}

/// Go's `sort` package xorshift generator, seeded with the slice length.
struct XorShift {
    state: u64,
    release: GoRelease,
}

impl XorShift {
    fn next(&mut self) -> u64 {
        let (a, b, c) = match self.release {
            GoRelease::Go119 => (13, 17, 5),
            GoRelease::Go122 => (13, 7, 17),
        };
        self.state ^= self.state << a;
        self.state ^= self.state >> b;
        self.state ^= self.state << c;
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator so the tests need no RNG crate.
    fn pseudo_random(seed: u64, n: usize, modulo: u64) -> Vec<u64> {
        let mut x = XorShift {
            state: seed | 1,
            release: GoRelease::Go122,
        };
        (0..n).map(|_| x.next() % modulo).collect()
    }

    #[test]
    fn sorts_every_length_and_shape() {
        for n in 0..300 {
            for (seed, modulo) in [(1, 1000), (7, 3), (11, 1)] {
                let mut v = pseudo_random(seed + n as u64, n, modulo);
                let mut expected = v.clone();
                expected.sort();
                go_sort(&mut v, |a, b| a < b);
                assert_eq!(v, expected, "n={n} modulo={modulo}");
            }
        }
    }

    #[test]
    fn sorts_presorted_reversed_and_sawtooth_inputs() {
        for n in [13, 49, 50, 51, 100, 1000, 4096] {
            let inputs: Vec<Vec<u64>> = vec![
                (0..n as u64).collect(),
                (0..n as u64).rev().collect(),
                (0..n as u64).map(|i| i % 7).collect(),
                (0..n as u64)
                    .map(|i| if i % 2 == 0 { i } else { n as u64 - i })
                    .collect(),
            ];
            for mut v in inputs {
                let mut expected = v.clone();
                expected.sort();
                go_sort(&mut v, |a, b| a < b);
                assert_eq!(v, expected);
            }
        }
    }

    #[test]
    fn twelve_or_fewer_elements_sort_stably_like_go_insertion_sort() {
        let mut v: Vec<(u8, usize)> = (0..12).map(|i| ((i % 3) as u8, i)).collect();
        go_sort(&mut v, |a, b| a.0 < b.0);
        let ties_in_input_order = v.windows(2).all(|w| w[0].0 < w[1].0 || w[0].1 < w[1].1);
        assert!(ties_in_input_order);
    }

    #[test]
    fn reversed_less_keeps_ties_in_input_order_for_short_slices() {
        let mut v: Vec<(u8, usize)> = (0..10).map(|i| ((i % 2) as u8, i)).collect();
        go_sort(&mut v, |a, b| b.0 < a.0);
        assert_eq!(
            v.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![1, 3, 5, 7, 9, 0, 2, 4, 6, 8]
        );
    }

    /// 200 keys `k000`..`k199` where key i was written `1 + (7i + i*i) % 4` times, ranged with
    /// sort target VERSION, recorded from a real etcd 3.4.23 (built with Go 1.19.8): ties among
    /// 200 keys make pdqsort break patterns, so the order pins down every move of the algorithm.
    const ETCD_3_4_23_BY_VERSION_ASCEND: [usize; 200] = [
        0, 192, 197, 196, 4, 5, 193, 49, 8, 9, 189, 188, 12, 13, 185, 184, 16, 17, 181, 180, 20,
        21, 177, 176, 24, 25, 173, 172, 28, 29, 169, 168, 32, 33, 165, 164, 36, 37, 161, 160, 40,
        41, 157, 156, 44, 45, 153, 152, 132, 1, 60, 149, 52, 53, 148, 145, 56, 57, 144, 141, 100,
        61, 140, 137, 64, 65, 136, 133, 68, 69, 48, 129, 72, 73, 128, 125, 76, 77, 124, 121, 80,
        81, 120, 117, 84, 85, 116, 113, 88, 89, 112, 109, 92, 93, 108, 105, 96, 97, 104, 101, 50,
        99, 102, 103, 98, 95, 106, 107, 94, 91, 110, 111, 90, 87, 114, 115, 86, 83, 118, 119, 82,
        79, 122, 123, 78, 75, 126, 127, 74, 71, 130, 131, 70, 67, 134, 135, 66, 63, 138, 139, 62,
        59, 142, 143, 58, 55, 146, 147, 54, 51, 150, 151, 47, 46, 154, 155, 43, 42, 158, 159, 39,
        38, 162, 163, 35, 34, 166, 167, 31, 30, 170, 171, 27, 26, 174, 175, 23, 22, 178, 179, 19,
        18, 182, 183, 15, 14, 186, 187, 11, 10, 190, 191, 7, 6, 194, 195, 3, 2, 198, 199,
    ];
    const ETCD_3_4_23_BY_VERSION_DESCEND: [usize; 200] = [
        151, 102, 2, 3, 199, 198, 6, 7, 195, 194, 10, 11, 191, 99, 14, 15, 190, 187, 18, 19, 186,
        183, 22, 23, 182, 179, 26, 27, 178, 175, 30, 31, 174, 98, 34, 35, 171, 170, 38, 39, 167,
        166, 42, 43, 163, 162, 46, 47, 159, 158, 50, 51, 155, 154, 54, 55, 150, 147, 58, 59, 146,
        143, 62, 63, 142, 139, 66, 67, 138, 135, 70, 71, 134, 131, 74, 75, 130, 127, 78, 79, 126,
        123, 82, 83, 122, 119, 86, 87, 118, 115, 90, 91, 114, 111, 94, 95, 110, 107, 106, 103, 13,
        149, 180, 1, 104, 105, 172, 97, 108, 109, 96, 93, 112, 113, 92, 89, 116, 117, 88, 85, 120,
        121, 84, 81, 124, 125, 80, 77, 128, 129, 76, 73, 132, 133, 72, 69, 136, 137, 68, 65, 140,
        141, 64, 61, 144, 145, 60, 57, 148, 101, 56, 0, 152, 153, 53, 52, 156, 157, 49, 48, 160,
        161, 45, 44, 164, 165, 41, 40, 168, 169, 37, 36, 33, 173, 32, 29, 176, 177, 28, 25, 100,
        181, 24, 21, 184, 185, 20, 17, 188, 189, 16, 12, 192, 193, 9, 8, 196, 197, 5, 4,
    ];

    fn recorded_input() -> Vec<(usize, i64)> {
        (0..200)
            .map(|i| (i, (1 + (i * 7 + i * i) % 4) as i64))
            .collect()
    }

    #[test]
    fn matches_the_order_a_real_etcd_returned_for_tied_versions() {
        let mut ascend = recorded_input();
        go_sort_as(GoRelease::Go119, &mut ascend, |a, b| a.1 < b.1);
        let ascend: Vec<usize> = ascend.iter().map(|x| x.0).collect();
        assert_eq!(ascend, ETCD_3_4_23_BY_VERSION_ASCEND);
        let mut descend = recorded_input();
        go_sort_as(GoRelease::Go119, &mut descend, |a, b| b.1 < a.1);
        let descend: Vec<usize> = descend.iter().map(|x| x.0).collect();
        assert_eq!(descend, ETCD_3_4_23_BY_VERSION_DESCEND);
    }

    #[test]
    fn the_go_release_changes_tie_order_so_the_recorded_vectors_test_pattern_breaking() {
        let mut a = recorded_input();
        let mut b = recorded_input();
        go_sort_as(GoRelease::Go119, &mut a, |x, y| x.1 < y.1);
        go_sort_as(GoRelease::Go122, &mut b, |x, y| x.1 < y.1);
        assert_ne!(a, b);
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn same_input_same_permutation() {
        let base: Vec<(u64, usize)> = pseudo_random(42, 500, 5)
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        let mut a = base.clone();
        let mut b = base;
        go_sort(&mut a, |x, y| x.0 < y.0);
        go_sort(&mut b, |x, y| x.0 < y.0);
        assert_eq!(a, b);
    }
}
