//! [`HostBuf`], the CPU backend's buffer, and the free list that recycles them.
//!
//! A training step allocates every activation and activation gradient afresh and frees them
//! all by its end; with plain `Vec`s that cost a `malloc`, a `calloc` memset on one thread
//! and a `free` per buffer (~16% of a tiny-preset step's instructions). A `HostBuf` goes back
//! to a free list keyed by its exact length when dropped, and the next request of that length
//! takes it back. The next step asks for the same lengths in the same order, so after the
//! first step almost every buffer is a recycled one.
//!
//! Recycled memory is dirty. [`HostBuf::zeroed`] clears it (for outputs an op accumulates
//! into); [`HostBuf::unspecified`] does not, and is only for outputs an op overwrites in full
//! before anything reads them. In debug builds (every test) `unspecified` fills the buffer
//! with NaN instead, so an op that reads an element it was meant to overwrite produces NaN
//! and fails its test rather than passing on zeros by luck.
//!
//! Footprint: the memory held in `HostBuf`s (live plus free) never exceeds the most ever live
//! at once plus 1/8 of that. A request the list cannot serve first frees listed buffers, the
//! least recently returned first, until the new one fits. (With no slack, a tiny-preset step
//! kept evicting and reallocating ~8% of its buffers: the free buffers at hand were of other
//! lengths than the ones asked for; 1/8 lets every buffer of later steps be recycled.)

use super::scratch::FLAT_CHUNK;
use super::simd::avx2_fn;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers shorter than this bypass the list (`malloc` is cheap for them).
const MIN_POOLED_LEN: usize = 1024;

/// Elements from which a fill runs on the rayon pool (smaller: on the calling thread).
const PAR_FILL_MIN: usize = 1 << 16;

/// The free list may hold this fraction (1/SLACK_DIV) of the high-water mark beyond it.
const SLACK_DIV: usize = 8;

/// Whether [`HostBuf::unspecified`] poisons its buffers with NaN.
const POISON: bool = cfg!(debug_assertions);

/// Elements of the CPU backend's memory: a `Vec<f32>` that returns to the free list on drop.
pub struct HostBuf(Vec<f32>);

/// Counters of the free list since the process started (buffers of at least
/// `MIN_POOLED_LEN` elements only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served by a recycled buffer.
    pub hits: u64,
    /// Requests that allocated.
    pub misses: u64,
    /// Listed buffers freed to stay under the high-water mark.
    pub evictions: u64,
    /// Elements now on the list.
    pub free_len: usize,
    /// Most elements ever held in live `HostBuf`s at once.
    pub high_water_len: usize,
}

struct FreeList {
    /// Free buffers by exact length, each list oldest first, with the stamp of its return.
    by_len: BTreeMap<usize, Vec<(u64, Vec<f32>)>>,
    /// Elements in live `HostBuf`s (of at least MIN_POOLED_LEN).
    live: usize,
    /// Elements on the list.
    free: usize,
    /// Most elements ever live at once.
    high_water: usize,
    /// Return counter (the stamps).
    clock: u64,
    stats: PoolStats,
}

static FREE: Mutex<FreeList> = Mutex::new(FreeList {
    by_len: BTreeMap::new(),
    live: 0,
    free: 0,
    high_water: 0,
    clock: 0,
    stats: PoolStats { hits: 0, misses: 0, evictions: 0, free_len: 0, high_water_len: 0 },
});

fn free_list() -> std::sync::MutexGuard<'static, FreeList> {
    // The list holds no invariant a panic elsewhere could break half-way.
    FREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FreeList {
    /// A listed buffer of exactly `len` elements, counted live.
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let list = self.by_len.get_mut(&len)?;
        let (_, v) = list.pop()?;
        if list.is_empty() {
            self.by_len.remove(&len);
        }
        self.free -= len;
        self.live += len;
        self.high_water = self.high_water.max(self.live);
        self.stats.hits += 1;
        Some(v)
    }

    /// Most elements live plus free: the high-water mark and a slack of 1/SLACK_DIV of it.
    fn limit(&self) -> usize {
        self.high_water + self.high_water / SLACK_DIV
    }

    /// Counts a new allocation of `len` live and frees the least recently returned listed
    /// buffers until live + free is back under the high-water mark. Returns them, to be
    /// dropped after the lock is released.
    fn admit(&mut self, len: usize) -> Vec<Vec<f32>> {
        self.live += len;
        self.high_water = self.high_water.max(self.live);
        self.stats.misses += 1;
        let mut evicted = Vec::new();
        while self.live + self.free > self.limit() {
            let oldest = self.by_len.iter().min_by_key(|(_, list)| list[0].0).map(|(&l, _)| l);
            let Some(l) = oldest else { break };
            let list = self.by_len.get_mut(&l).expect("length just found");
            let (_, v) = list.remove(0);
            if list.is_empty() {
                self.by_len.remove(&l);
            }
            self.free -= l;
            self.stats.evictions += 1;
            evicted.push(v);
        }
        evicted
    }

    /// Lists a dropped buffer.
    fn give(&mut self, v: Vec<f32>) {
        let len = v.len();
        self.live -= len;
        self.free += len;
        self.clock += 1;
        self.by_len.entry(len).or_default().push((self.clock, v));
    }
}

/// A buffer of `len` elements from the list, or `None` (then counted as an allocation to
/// come, with room made for it under the high-water mark).
fn recycled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED_LEN {
        return None;
    }
    let mut list = free_list();
    if let Some(v) = list.take(len) {
        return Some(v);
    }
    let evicted = list.admit(len);
    drop(list);
    drop(evicted);
    None
}

impl HostBuf {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        match recycled(len) {
            Some(mut v) => {
                fill(&mut v, 0.0);
                HostBuf(v)
            }
            None => HostBuf(fresh(len, 0.0)),
        }
    }

    /// `len` elements whose values are unspecified (a recycled buffer's old contents; NaN in
    /// debug builds): only for an output that is overwritten in full before it is read.
    pub fn unspecified(len: usize) -> Self {
        match recycled(len) {
            Some(mut v) => {
                if POISON {
                    fill(&mut v, f32::NAN);
                }
                HostBuf(v)
            }
            None => HostBuf(fresh(len, if POISON { f32::NAN } else { 0.0 })),
        }
    }

    /// A copy of `data`.
    pub fn from_slice(data: &[f32]) -> Self {
        match recycled(data.len()) {
            Some(mut v) => {
                v.copy_from_slice(data);
                HostBuf(v)
            }
            None => HostBuf(data.to_vec()),
        }
    }

    /// The elements as a plain vector (taken off the list's books).
    pub fn into_vec(mut self) -> Vec<f32> {
        let v = std::mem::take(&mut self.0);
        if v.len() >= MIN_POOLED_LEN {
            free_list().live -= v.len();
        }
        v
    }
}

/// Counters of the free list (for benchmarks and tests).
pub fn pool_stats() -> PoolStats {
    let list = free_list();
    PoolStats { free_len: list.free, high_water_len: list.high_water, ..list.stats }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.len() >= MIN_POOLED_LEN {
            free_list().give(v);
        }
    }
}

impl From<Vec<f32>> for HostBuf {
    fn from(v: Vec<f32>) -> Self {
        if v.len() >= MIN_POOLED_LEN {
            let mut list = free_list();
            list.live += v.len();
            list.high_water = list.high_water.max(list.live);
        }
        HostBuf(v)
    }
}

impl Clone for HostBuf {
    fn clone(&self) -> Self {
        HostBuf::from_slice(&self.0)
    }
}

impl From<HostBuf> for Vec<f32> {
    fn from(b: HostBuf) -> Self {
        b.into_vec()
    }
}

impl FromIterator<f32> for HostBuf {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        HostBuf::from(iter.into_iter().collect::<Vec<f32>>())
    }
}

impl<'a> IntoIterator for &'a HostBuf {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut HostBuf {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl Deref for HostBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for HostBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl fmt::Debug for HostBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for HostBuf {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<Vec<f32>> for HostBuf {
    fn eq(&self, other: &Vec<f32>) -> bool {
        &self.0 == other
    }
}

impl PartialEq<[f32]> for HostBuf {
    fn eq(&self, other: &[f32]) -> bool {
        self.0[..] == *other
    }
}

avx2_fn! {
/// Sets every element of `x` to `value`, large buffers on the rayon pool 8 lanes wide (a
/// single-threaded memset would stall the compute pool).
fn fill(x: &mut [f32], value: f32) {
    if x.len() < PAR_FILL_MIN {
        x.fill(value);
    } else {
        x.par_chunks_mut(FLAT_CHUNK).for_each(|c| c.fill(value));
    }
}
}

avx2_fn! {
/// A newly allocated vector of `len` copies of `value`: `calloc` for small zero ones, else
/// uninitialised capacity filled on the pool.
fn fresh(len: usize, value: f32) -> Vec<f32> {
    if len < PAR_FILL_MIN {
        return vec![value; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(FLAT_CHUNK).for_each(|c| c.fill(MaybeUninit::new(value)));
    // SAFETY: the capacity is at least len and the first len elements were all written above.
    unsafe { v.set_len(len) };
    v
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length no other test in this binary uses, so counters and contents are this test's.
    fn unique_len(k: usize) -> usize {
        MIN_POOLED_LEN + 7919 * k
    }

    /// Through the global list (shared with concurrent tests, which may evict, so only the
    /// contents are asserted here; the reuse itself is tested on a private list below).
    #[test]
    fn zeroed_buffers_are_zero_even_when_recycled() {
        let len = unique_len(1);
        let mut a = HostBuf::zeroed(len);
        assert!(a.iter().all(|v| *v == 0.0));
        a.fill(3.0);
        drop(a);
        let b = HostBuf::zeroed(len);
        assert!(b.iter().all(|v| *v == 0.0), "a recycled zeroed buffer is cleared");
        drop(b);
        let c = HostBuf::from_slice(&vec![2.5; len]);
        assert!(c.iter().all(|v| *v == 2.5));
    }

    /// Tests run in debug builds, where an unspecified buffer is all NaN, fresh or recycled:
    /// an op that reads before writing fails loudly.
    #[test]
    #[cfg_attr(not(debug_assertions), ignore = "poisoning is on in debug builds only")]
    fn unspecified_buffers_are_poisoned_in_debug_builds() {
        for len in [10, unique_len(2)] {
            let a = HostBuf::unspecified(len);
            assert!(a.iter().all(|v| v.is_nan()), "fresh, len {len}");
            let mut z = HostBuf::zeroed(len);
            z.fill(1.0);
            drop(z);
            drop(a);
            let b = HostBuf::unspecified(len);
            assert!(b.iter().all(|v| v.is_nan()), "recycled, len {len}");
        }
    }

    /// Checked on the list's contents for one length, not on its counters: other tests of this
    /// binary allocate concurrently and move the global counters (which made this test flaky).
    #[test]
    fn small_buffers_bypass_the_list() {
        let len = MIN_POOLED_LEN - 3;
        drop(HostBuf::zeroed(len));
        drop(HostBuf::unspecified(len));
        drop(HostBuf::from(vec![1.0; len]));
        assert!(!free_list().by_len.contains_key(&len), "a buffer of {len} elements was listed");
    }

    #[test]
    fn into_vec_and_from_keep_the_contents() {
        let len = unique_len(3);
        let v: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let b = HostBuf::from(v.clone());
        assert_eq!(b, v);
        assert_eq!(b.clone().into_vec(), v);
    }

    /// The eviction rule on a private list: live + free never exceeds the high-water mark
    /// plus its slack.
    #[test]
    fn the_list_stays_under_the_high_water_mark_and_slack() {
        let mut l = FreeList {
            by_len: BTreeMap::new(),
            live: 0,
            free: 0,
            high_water: 0,
            clock: 0,
            stats: PoolStats::default(),
        };
        // Two buffers of 100 live at once, both freed: high water 200, 200 free.
        assert!(l.admit(100).is_empty());
        assert!(l.admit(100).is_empty());
        let first = vec![1.0; 100];
        let first_ptr = first.as_ptr();
        l.give(first);
        l.give(vec![2.0; 100]);
        assert_eq!((l.live, l.free, l.high_water), (0, 200, 200));
        // A length served from the list: the most recently returned buffer.
        let v = l.take(100).expect("listed");
        assert_eq!(v[0], 2.0);
        l.give(v);
        // 50 of another length: 250 > 200 + 200/8, so the least recently returned 100 goes.
        let evicted = l.admit(50);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].as_ptr(), first_ptr);
        assert_eq!((l.live, l.free, l.high_water), (50, 100, 200));
        assert!(l.live + l.free <= l.limit());
        // 60 of a third length: 110 + 100 = 210 > 200, but within the slack (225): no eviction.
        assert!(l.admit(60).is_empty());
        assert_eq!((l.live, l.free, l.high_water), (110, 100, 200));
        // The remaining 100 is served (live 210 is a new high-water mark), then none.
        assert_eq!(l.take(100).expect("listed")[0], 2.0);
        assert_eq!((l.live, l.free, l.high_water), (210, 0, 210));
        assert!(l.take(100).is_none());
        assert_eq!((l.stats.hits, l.stats.misses, l.stats.evictions), (2, 4, 1));
    }
}
