//! The bookkeeping of the device memory arena: size classes, free lists, the byte budget
//! (`--vram-limit`) and the measured peaks. Pure logic over an abstract block type, so it is
//! tested on machines without a GPU; `memory.rs` instantiates it with cudarc allocations.
//!
//! Every device buffer of the CUDA backend (activations, workspaces, master weights, optimiser
//! state, staging temporaries) is a block of this arena. A request of `b` bytes is rounded up
//! to its size class (at most 1/32 = 3.1% more, see [`class_bytes`]); a freed block goes to
//! the free list of its class and is handed out again to the next request of that class, so
//! after the first training step every activation of the step is a free-list hit and the
//! driver is not called. The arena never holds more than the limit: before allocating, it
//! frees cached blocks (largest first) until the request fits, and when even an empty cache
//! cannot make room it refuses with `KernelError::OutOfMemory` naming the limit, the request
//! and what is in use.

use crate::error::{KernelError, Result};
use std::collections::BTreeMap;

/// The smallest class; also the granularity of small classes.
pub const MIN_CLASS: usize = 512;
/// Classes between two powers of two: 32 steps bound the rounding waste to 1/32.
const STEPS_PER_OCTAVE: usize = 32;

/// The size class (bytes actually reserved) of a request of `bytes` bytes: a multiple of
/// 512 B, and of 1/32 of the largest power of two not above `bytes`.
pub fn class_bytes(bytes: usize) -> usize {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    let pow = 1usize << (usize::BITS - 1 - bytes.leading_zeros());
    let step = (pow / STEPS_PER_OCTAVE).max(MIN_CLASS);
    bytes.div_ceil(step) * step
}

/// "1.50 GiB"-style rendering of a byte count, for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Why the underlying allocator failed.
#[derive(Debug)]
pub enum AllocFailure {
    /// The device itself is out of memory (worth freeing the cache and retrying once).
    OutOfMemory(String),
    /// Anything else (reported as is).
    Other(KernelError),
}

/// Counters of the arena, all in bytes of size classes unless named `requested`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// The budget, if any.
    pub limit: Option<u64>,
    /// Held by live buffers.
    pub live: u64,
    /// Held in the free lists (returned by buffers, kept for reuse).
    pub cached: u64,
    /// Highest `live` seen: what the run needs at least (the figure to compare with a plan).
    pub peak_live: u64,
    /// Highest `live + cached` seen: what the arena really held on the device.
    pub peak_reserved: u64,
    /// Bytes the live buffers asked for (before rounding to classes).
    pub live_requested: u64,
    pub peak_requested: u64,
    /// Calls to the underlying allocator, free-list hits, blocks freed to make room.
    pub allocations: u64,
    pub reuses: u64,
    pub evictions: u64,
}

impl MemoryStats {
    pub fn reserved(&self) -> u64 {
        self.live + self.cached
    }
}

/// Free lists and counters over blocks of type `B` (dropping a `B` frees its memory).
#[derive(Debug)]
pub struct ArenaBook<B> {
    free: BTreeMap<usize, Vec<B>>,
    stats: MemoryStats,
}

impl<B> ArenaBook<B> {
    pub fn new(limit: Option<u64>) -> Self {
        ArenaBook { free: BTreeMap::new(), stats: MemoryStats { limit, ..MemoryStats::default() } }
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    /// Forget the peaks (e.g. after start-up, to measure the steady state from here).
    pub fn reset_peaks(&mut self) {
        self.stats.peak_live = self.stats.live;
        self.stats.peak_reserved = self.stats.reserved();
        self.stats.peak_requested = self.stats.live_requested;
    }

    /// A block of at least `bytes` bytes for `what` (named in errors): a cached block of the
    /// same class, or a new one from `alloc(class_bytes)`. Returns the block and its class.
    pub fn take(
        &mut self,
        what: &str,
        bytes: usize,
        mut alloc: impl FnMut(usize) -> std::result::Result<B, AllocFailure>,
    ) -> Result<(B, usize)> {
        let class = class_bytes(bytes);
        if let Some(block) = self.free.get_mut(&class).and_then(Vec::pop) {
            self.stats.cached -= class as u64;
            self.stats.reuses += 1;
            self.commit(class, bytes);
            return Ok((block, class));
        }
        self.make_room(what, bytes, class)?;
        let block = match alloc(class) {
            Ok(b) => b,
            Err(AllocFailure::OutOfMemory(first)) => {
                // The device is fuller than the budget thought (other processes, the CUDA
                // context, cuDNN/cuBLAS internals): give the cache back and try once more.
                self.evict(u64::MAX);
                match alloc(class) {
                    Ok(b) => b,
                    Err(AllocFailure::OutOfMemory(second)) => {
                        return Err(self.refusal(
                            what,
                            bytes,
                            class,
                            &format!("the device refused it ({first}; {second})"),
                        ))
                    }
                    Err(AllocFailure::Other(e)) => return Err(e),
                }
            }
            Err(AllocFailure::Other(e)) => return Err(e),
        };
        self.stats.allocations += 1;
        self.commit(class, bytes);
        Ok((block, class))
    }

    /// A buffer of class `class` that had asked for `requested` bytes is done with `block`.
    pub fn give_back(&mut self, block: B, class: usize, requested: usize) {
        self.stats.live -= class as u64;
        self.stats.live_requested -= requested as u64;
        self.stats.cached += class as u64;
        self.free.entry(class).or_default().push(block);
    }

    /// Frees every cached block (returns how many bytes that gave back).
    pub fn release_cache(&mut self) -> u64 {
        let before = self.stats.cached;
        self.evict(u64::MAX);
        before - self.stats.cached
    }

    fn commit(&mut self, class: usize, requested: usize) {
        let s = &mut self.stats;
        s.live += class as u64;
        s.live_requested += requested as u64;
        s.peak_live = s.peak_live.max(s.live);
        s.peak_requested = s.peak_requested.max(s.live_requested);
        s.peak_reserved = s.peak_reserved.max(s.live + s.cached);
    }

    /// Frees cached blocks, largest first, until at least `bytes` were freed or none is left.
    fn evict(&mut self, bytes: u64) {
        let mut freed = 0u64;
        while freed < bytes {
            let Some(mut entry) = self.free.last_entry() else { break };
            let class = *entry.key();
            let list = entry.get_mut();
            match list.pop() {
                Some(block) => {
                    drop(block);
                    freed += class as u64;
                    self.stats.cached -= class as u64;
                    self.stats.evictions += 1;
                }
                None => {
                    entry.remove();
                }
            }
            if self.free.get(&class).is_some_and(Vec::is_empty) {
                self.free.remove(&class);
            }
        }
    }

    /// Makes the reservation of `class` more bytes fit the limit, or refuses.
    fn make_room(&mut self, what: &str, bytes: usize, class: usize) -> Result<()> {
        let Some(limit) = self.stats.limit else { return Ok(()) };
        let need = self.stats.live + class as u64;
        if need > limit {
            return Err(self.refusal(what, bytes, class, "it does not fit"));
        }
        let reserved = self.stats.reserved() + class as u64;
        if reserved > limit {
            self.evict(reserved - limit);
        }
        Ok(())
    }

    fn refusal(&self, what: &str, bytes: usize, class: usize, why: &str) -> KernelError {
        let s = &self.stats;
        // Raising --vram-limit only helps when there is one: without it the card itself is
        // full (found on the emulated device, whose memory size a test can shrink).
        let (limit, advice) = match s.limit {
            Some(l) => (
                format!("the VRAM limit of {}", human_bytes(l)),
                "lower the batch size, turn on recompute, or raise --vram-limit",
            ),
            None => (
                "the device memory".to_string(),
                "lower the batch size or turn on recompute (`launcher plan --vram SIZE` shows what fits)",
            ),
        };
        KernelError::OutOfMemory(format!(
            "{what} asked for {} ({} reserved) with {} in use (peak {}), and {why} within {limit}; {advice}",
            human_bytes(bytes as u64),
            human_bytes(class as u64),
            human_bytes(s.live),
            human_bytes(s.peak_live),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn classes_round_up_by_at_most_a_thirty_second() {
        assert_eq!(class_bytes(0), MIN_CLASS);
        assert_eq!(class_bytes(1), MIN_CLASS);
        assert_eq!(class_bytes(513), 1024);
        for bytes in [1000usize, 4097, 65_537, 1 << 20, (1 << 20) + 1, 123_456_789, 3 << 30] {
            let c = class_bytes(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert_eq!(c % MIN_CLASS, 0, "{bytes} -> {c}");
            let waste = (c - bytes) as f64 / bytes as f64;
            assert!(waste <= 1.0 / 32.0 || c - bytes < MIN_CLASS, "{bytes} -> {c} wastes {waste}");
            assert_eq!(class_bytes(c), c, "a class is its own class");
        }
    }

    /// A fake device block that counts the blocks alive.
    #[derive(Debug)]
    struct Fake {
        alive: Rc<Cell<usize>>,
    }
    impl Drop for Fake {
        fn drop(&mut self) {
            self.alive.set(self.alive.get() - 1);
        }
    }

    fn fake_alloc(
        alive: &Rc<Cell<usize>>,
    ) -> impl FnMut(usize) -> std::result::Result<Fake, AllocFailure> + '_ {
        move |_| {
            alive.set(alive.get() + 1);
            Ok(Fake { alive: alive.clone() })
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_peaks_are_measured() {
        let alive = Rc::new(Cell::new(0));
        let mut book = ArenaBook::new(None);
        let (a, ca) = book.take("a", 4000, fake_alloc(&alive)).unwrap();
        let (b, cb) = book.take("b", 10_000, fake_alloc(&alive)).unwrap();
        assert_eq!(book.stats().live, (ca + cb) as u64);
        book.give_back(a, ca, 4000);
        // Same class: served from the free list, no new allocation.
        let (a2, _) = book.take("a2", 3900, fake_alloc(&alive)).unwrap();
        let s = book.stats();
        assert_eq!((s.allocations, s.reuses), (2, 1));
        assert_eq!(alive.get(), 2);
        assert_eq!(s.peak_live, (ca + cb) as u64);
        assert_eq!(s.live_requested, 10_000 + 3900);
        assert_eq!(s.peak_requested, 14_000);
        book.give_back(a2, ca, 3900);
        book.give_back(b, cb, 10_000);
        let s = book.stats();
        assert_eq!((s.live, s.cached), (0, (ca + cb) as u64));
        assert_eq!(book.release_cache(), (ca + cb) as u64);
        assert_eq!(alive.get(), 0, "releasing the cache frees every block");
    }

    #[test]
    fn the_limit_refuses_what_cannot_fit_and_names_it() {
        let alive = Rc::new(Cell::new(0));
        let mut book = ArenaBook::new(Some(1 << 20));
        let (_a, _) = book.take("activations", 600 << 10, fake_alloc(&alive)).unwrap();
        let err = book.take("conv workspace", 600 << 10, fake_alloc(&alive)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KernelError::OutOfMemory(_)), "{msg}");
        assert!(
            msg.contains("conv workspace") && msg.contains("1.00 MiB") && msg.contains("600.00 KiB"),
            "{msg}"
        );
        assert_eq!(alive.get(), 1, "nothing was allocated for the refused request");
        assert_eq!(book.stats().live, class_bytes(600 << 10) as u64);
    }

    #[test]
    fn cached_blocks_are_freed_to_make_room_under_the_limit() {
        let alive = Rc::new(Cell::new(0));
        let mut book = ArenaBook::new(Some(1 << 20));
        let (a, ca) = book.take("a", 700 << 10, fake_alloc(&alive)).unwrap();
        book.give_back(a, ca, 700 << 10);
        // A different class: the cached 700 KiB block must go before 500 KiB fit.
        let (_b, cb) = book.take("b", 500 << 10, fake_alloc(&alive)).unwrap();
        let s = book.stats();
        assert_eq!(s.evictions, 1);
        assert_eq!(s.cached, 0);
        assert_eq!(s.live, cb as u64);
        assert!(s.peak_reserved <= 1 << 20, "the arena never held more than the limit: {s:?}");
        assert_eq!(alive.get(), 1);
    }

    #[test]
    fn a_device_out_of_memory_frees_the_cache_and_retries_once() {
        let alive = Rc::new(Cell::new(0));
        let mut book = ArenaBook::new(None);
        let (a, ca) = book.take("a", 2048, fake_alloc(&alive)).unwrap();
        book.give_back(a, ca, 2048);
        let calls = Cell::new(0);
        let got = book.take("b", 100_000, |_| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(AllocFailure::OutOfMemory("CUDA_ERROR_OUT_OF_MEMORY".into()))
            } else {
                alive.set(alive.get() + 1);
                Ok(Fake { alive: alive.clone() })
            }
        });
        assert!(got.is_ok());
        assert_eq!(calls.get(), 2);
        assert_eq!(book.stats().cached, 0, "the cache was given back before the retry");
        let err = book
            .take("c", 1 << 30, |_| Err(AllocFailure::OutOfMemory("CUDA_ERROR_OUT_OF_MEMORY".into())))
            .unwrap_err();
        assert!(matches!(&err, KernelError::OutOfMemory(m) if m.contains("device refused")), "{err}");
        // No --vram-limit was given, so the advice must not be to raise it.
        assert!(!err.to_string().contains("--vram-limit"), "{err}");
        assert!(err.to_string().contains("lower the batch size"), "{err}");
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(8 << 30), "8.00 GiB");
        assert_eq!(human_bytes(1536 << 20), "1.50 GiB");
    }
}
