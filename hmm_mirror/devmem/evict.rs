// SPDX-License-Identifier: GPL-2.0

//! Eviction: device memory's pages back to system memory, wherever they
//! are mapped, without knowing their mm (`migrate_device_range`).
//!
//! Whole memory ([`DevMem::evict`]: unbind, destroy), a range of it
//! ([`DevMem::evict_range`]), or least-recently-used 2 MiB blocks first
//! ([`DevMem::evict_lru`]): a shrinker, and a migration to full memory
//! whose memory was created with [`Policy::EvictLru`]
//! ([`DevMem::make_room`]). Recency ([`Lru`]) is a stamp per block, taken
//! when pages arrive and when a device fault maps them; finding the oldest
//! scans the stamps (256 for 512 MiB), which is cheaper than keeping a list
//! in order on the fault path.
//!
//! Eviction never spins: `migrate_device_range` only try-locks pages, so a
//! page that a CPU fault, another migration or an exit holds stays, and its
//! block is counted as skipped and not tried again in the same call. A
//! fatal signal ends it between blocks.

use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use super::{DevMem, HUGE_PAGES};
use crate::{
    hmm_mirror::{interval::fatal_signal_pending, migrate::Migration},
    trace,
};

/// What a migration does when device memory is full.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Policy {
    /// Leaves the pages that do not fit in system memory.
    LeaveBehind,
    /// Evicts least-recently-used blocks to make room.
    EvictLru,
}

/// Recency of a device memory's 2 MiB blocks.
///
/// # Invariants
///
/// `stamps` has one entry per block; a larger stamp is a later use.
pub(crate) struct Lru {
    clock: Atomic<u64>,
    stamps: KVec<Atomic<u64>>,
}

impl Lru {
    pub(crate) fn new(blocks: usize) -> Result<Self> {
        let mut stamps = KVec::with_capacity(blocks, GFP_KERNEL)?;
        for _ in 0..blocks {
            stamps.push(Atomic::new(0), GFP_KERNEL)?;
        }
        Ok(Self {
            clock: Atomic::new(0),
            stamps,
        })
    }

    /// Block `block` was used now.
    pub(crate) fn touch(&self, block: usize) {
        let now = self.clock.fetch_add(1, Relaxed) + 1;
        if let Some(s) = self.stamps.get(block) {
            s.store(now, Relaxed);
        }
    }

    /// The least recently used block of those `candidate` accepts.
    pub(crate) fn oldest(&self, candidate: impl Fn(usize) -> bool) -> Option<usize> {
        self.stamps
            .iter()
            .enumerate()
            .filter(|&(b, _)| candidate(b))
            .min_by_key(|(_, s)| s.load(Relaxed))
            .map(|(b, _)| b)
    }
}

impl DevMem {
    /// Moves every page in use back to system memory, wherever it is
    /// mapped. Returns how many moved. May sleep. Costs in proportion to
    /// the pages in use (and a scan of one bit per page), not to the size
    /// of the memory.
    pub(crate) fn evict(&self) -> Result<usize> {
        self.evict_range(0, self.npages)
    }

    /// [`Self::evict`] of the 2 MiB blocks overlapping pages `[first,
    /// first + n)` (huge folios move whole, so whole blocks do).
    ///
    /// Errors: `EINVAL` for a range beyond the memory; `ENOMEM`; `EINTR`.
    pub(crate) fn evict_range(&self, first: usize, n: usize) -> Result<usize> {
        let end = first
            .checked_add(n)
            .filter(|&e| e <= self.npages)
            .ok_or(EINVAL)?;
        let (first, end) = (
            first - first % HUGE_PAGES,
            end.next_multiple_of(HUGE_PAGES).min(self.npages),
        );
        let in_use = self.in_use.count();
        let r = if in_use == 0 {
            Ok(0)
        } else {
            Evictor::new().and_then(|mut e| e.span(self, first, end))
        };
        if let Ok(n) = r {
            self.counters.evicted.add(n as u64);
        }
        trace::devmem_evict(self.id, self.npages, in_use, &r);
        r
    }

    /// Evicts least-recently-used blocks until `enough(pages evicted so
    /// far)` or no block is left to try (each is tried once). Returns how
    /// many pages moved. May sleep.
    ///
    /// Errors: `ENOMEM`; `EINTR` on a fatal signal (between blocks).
    pub(crate) fn evict_lru(&self, enough: &dyn Fn(usize) -> bool) -> Result<usize> {
        let blocks = self.npages.div_ceil(HUGE_PAGES);
        let mut tried = KVec::from_elem(false, blocks, GFP_KERNEL)?;
        let mut e = Evictor::new()?;
        let mut moved = 0;
        let r = loop {
            if enough(moved) {
                break Ok(moved);
            }
            if fatal_signal_pending() {
                break Err(EINTR);
            }
            let in_use = |b: usize| self.in_use.any(b * HUGE_PAGES, self.block_end(b));
            let Some(b) = self.lru.oldest(|b| !tried[b] && in_use(b)) else {
                break Ok(moved);
            };
            tried[b] = true;
            match e.span(self, b * HUGE_PAGES, self.block_end(b)) {
                Ok(n) => moved += n,
                Err(err) => break Err(err),
            }
            // Pages someone else held (locked, pinned, mid-migration).
            if in_use(b) {
                self.counters.evict_skipped.add(1);
            }
        };
        self.counters.evicted.add(moved as u64);
        trace::devmem_evict(self.id, self.npages, self.in_use.count(), &r);
        r
    }

    /// With [`Policy::EvictLru`], evicts until `want` pages are free, or
    /// it evicted as many as were missing (another migration may take the
    /// room meanwhile: it does not evict on its behalf), or nothing more
    /// can go. Returns how many pages moved.
    pub(crate) fn make_room(&self, want: usize) -> Result<usize> {
        let want = want.min(self.npages);
        let free = self.free_pages();
        if self.policy != Policy::EvictLru || free >= want {
            return Ok(0);
        }
        let missing = want - free;
        self.evict_lru(&|moved| moved >= missing || self.free_pages() >= want)
    }

    /// Pages not in use.
    pub(crate) fn free_pages(&self) -> usize {
        self.npages - self.in_use.count()
    }

    fn block_end(&self, b: usize) -> usize {
        ((b + 1) * HUGE_PAGES).min(self.npages)
    }
}

/// A migration step and its buffer, reused across the blocks of one
/// eviction.
struct Evictor {
    m: Migration,
    filled: KVec<(usize, usize)>,
}

impl Evictor {
    fn new() -> Result<Self> {
        Ok(Self {
            m: Migration::new()?,
            filled: KVec::with_capacity(HUGE_PAGES, GFP_KERNEL)?,
        })
    }

    /// Moves the pages in use of `[first, end)` of `mem` back to system
    /// memory; returns how many moved.
    fn span(&mut self, mem: &DevMem, first: usize, end: usize) -> Result<usize> {
        let mut moved = 0;
        let mut from = first;
        while let Some((a, b)) = mem.in_use.next_run(from, end) {
            // Steps of the huge blocks' alignment, so that a huge folio
            // is collected whole, in one step.
            let mut at = a - a % HUGE_PAGES;
            while at < b {
                let want = (b - at).min(HUGE_PAGES - at % HUGE_PAGES);
                let n = self.m.setup_device(mem.pfn(at), want)?;
                // A page that cannot be copied stays (and is lost when the
                // memory goes).
                let _ = self.m.fill_all_from_device(false, &mut self.filled);
                self.m.pages();
                moved += self
                    .filled
                    .iter()
                    .filter(|&&(head, _)| self.m.moved(head))
                    .map(|&(_, n)| n)
                    .sum::<usize>();
                self.m.finalize();
                at += n.max(1);
            }
            from = b;
        }
        Ok(moved)
    }
}

#[kernel::prelude::kunit_tests(hmm_rs_evict)]
mod tests {
    use super::*;

    #[test]
    fn lru_picks_least_recently_used() -> Result {
        let lru = Lru::new(4)?;
        for b in [0, 1, 2, 3] {
            lru.touch(b);
        }
        assert_eq!(lru.oldest(|_| true), Some(0));
        // Used again: now the newest.
        lru.touch(0);
        assert_eq!(lru.oldest(|_| true), Some(1));
        // Blocks not in use (or tried already) are passed over.
        assert_eq!(lru.oldest(|b| b != 1), Some(2));
        assert_eq!(lru.oldest(|b| b == 0), Some(0));
        assert_eq!(lru.oldest(|_| false), None);
        // Out of range: ignored.
        lru.touch(9);
        Ok(())
    }
}
