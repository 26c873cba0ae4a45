// SPDX-License-Identifier: GPL-2.0

//! The per-mirror page table.
//!
//! A radix tree over user virtual addresses shaped like the x86-64 page table,
//! so that a device driver can copy it into its own MMU cheaply: 4 KiB
//! directories of 512 64-bit slots, four levels for 48-bit addresses or five
//! for 57-bit ones. A slot is empty (0), a leaf [`PtEntry`] (bit 0, `VALID`,
//! set), or the address of the next directory (4 KiB aligned, so bit 0 clear).
//! A leaf in a level-1 directory maps 2 MiB: a huge entry, for THP-backed
//! memory. Directories are allocated on demand and freed when they become
//! empty; the root directory lives as long as the table.
//!
//! # Locking and memory
//!
//! - Readers ([`HmmPt::lookup`], [`HmmPt::walk`], [`PtCursor`]) take no lock:
//!   they run in an RCU read-side critical section, concurrently with each
//!   other and with one writer, and see each slot as it was either before or
//!   after a writer's store. They never sleep and never allocate.
//! - Writers hold the table's spinlock ([`HmmPt::lock`]): they are serialised
//!   per table and never sleep while holding it.
//! - Directories are allocated by [`HmmPt::reserve`], before the lock is
//!   taken, with the caller's GFP flags (`GFP_KERNEL` may sleep). Nothing done
//!   under the lock needs memory, so an invalidation may take the lock from
//!   within reclaim without deadlocking against a populate. The one exception
//!   is splitting a huge entry in [`PtGuard::update`], which tries
//!   `GFP_NOWAIT` and, failing that, applies the update to the whole huge
//!   entry: removing more than asked is always safe for a mirror, whose device
//!   faults back in what it lost.
//! - Directories unlinked by a writer are freed after an RCU grace period, so
//!   a reader never touches freed memory. Whoever unloads the code that owns
//!   tables must wait for those frees with `rcu_barrier()`.
//!
//! | operation | runs under | may sleep | allocates |
//! | --- | --- | --- | --- |
//! | [`HmmPt::new`] | nothing | yes | the root, `GFP_KERNEL` |
//! | [`HmmPt::reserve`] | RCU, to count | if its `gfp` allows | directories, its `gfp` |
//! | [`HmmPt::lock`] | takes the spinlock | no (spins) | no |
//! | [`PtGuard::populate`], [`PtGuard::populate_huge`] | the lock | no | no: from the [`Reserve`] |
//! | [`PtGuard::update`], [`PtGuard::clear`] | the lock | no | splits only, `GFP_NOWAIT` |
//! | [`PtGuard::set_dirty`] | the lock | no | no |
//! | [`HmmPt::lookup`], [`HmmPt::walk`], [`PtCursor::next`] | RCU | no | no |
//! | [`HmmPt::stats`] | nothing | no | no |
//! | dropping a [`HmmPt`] | nothing (no reader can be left) | no | no; frees at once |
//!
//! Dropping a table discards its `DIRTY` bits: [`PtGuard::clear`] it first,
//! handing them to whoever dirties the pages.

use kernel::{
    alloc::{flags, Flags},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu, LockClassKey, SpinLock, SpinLockGuard,
    },
};

mod dir;
mod entry;

use dir::{Dir, Slot};
pub(crate) use dir::{DirAlloc, DirPage, PageDirs};
pub(crate) use entry::{PtDirty, PtEntry, PtFlags, PtMapping};

/// A directory slot: `core`'s atomic, not `kernel::sync::atomic`'s, whose
/// every load and store is a call into a C helper that a module cannot
/// inline. Measured on the performance kernel, those calls were most of
/// what populating and walking the table cost per page. Relaxed, acquire
/// and release accesses of an aligned 64-bit word are the instructions of
/// `READ_ONCE()`, `smp_load_acquire()` and `smp_store_release()` on the
/// 64-bit architectures Linux supports; slots need no read-modify-write.
type SlotWord = core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering as Mo;

const PAGE_SHIFT: u32 = 12;
/// Bytes in a page, and in a directory.
pub(crate) const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const DIR_SHIFT: u32 = 9;
const DIR_SLOTS: usize = 1 << DIR_SHIFT;
/// Order (in pages) of what a huge entry maps.
pub(crate) const HUGE_ORDER: u32 = DIR_SHIFT;
/// Bytes a huge entry maps: 2 MiB.
pub(crate) const HUGE_SIZE: u64 = PAGE_SIZE << HUGE_ORDER;

/// Shift of the address bits that pick a slot in a level-`level` directory.
const fn level_shift(level: u32) -> u32 {
    PAGE_SHIFT + DIR_SHIFT * level
}

/// The end of the 2 MiB chunk of `[addr, end)` that starts at `addr`.
pub(crate) const fn huge_chunk_end(addr: u64, end: u64) -> u64 {
    let next = (addr | (HUGE_SIZE - 1)) + 1;
    if next < end {
        next
    } else {
        end
    }
}

/// `[start, end)` cut at 2 MiB boundaries, as `(chunk start, chunk end)`:
/// walks go a chunk at a time so that a huge page is seen whole.
pub(crate) fn huge_chunks(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut addr = start;
    core::iter::from_fn(move || {
        (addr < end).then(|| {
            let chunk = (addr, huge_chunk_end(addr, end));
            addr = chunk.1;
            chunk
        })
    })
}

/// How many address bits a table translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PtLevels {
    /// 48-bit addresses (x86-64 4-level paging).
    Four = 4,
    /// 57-bit addresses (x86-64 5-level paging).
    Five = 5,
}

/// What a table holds, for accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtStats {
    /// Directories allocated below the root.
    pub(crate) dirs: u64,
    /// Leaf entries; a huge entry counts once.
    pub(crate) entries: u64,
    /// Pages mapped; a huge entry counts 512.
    pub(crate) pages: u64,
    /// Partial updates of a huge entry that could not split it (no memory)
    /// and were applied to the whole huge entry.
    pub(crate) split_fallbacks: u64,
}

impl PtStats {
    /// Bytes used by the table: its directories and the root.
    pub(crate) const fn bytes(&self) -> u64 {
        (self.dirs + 1) * PAGE_SIZE
    }
}

/// Directories allocated ahead of an update, by [`HmmPt::reserve`].
///
/// Unused directories are freed when the reservation is dropped.
pub(crate) struct Reserve {
    dirs: KVec<DirPage>,
}

impl Reserve {
    /// Directories left.
    pub(crate) fn len(&self) -> usize {
        self.dirs.len()
    }
}

/// The slots of a level-`level` directory at `base` that overlap
/// `[start, end)`, as `(index, slot start, overlap start, overlap end)`.
fn slots_in(
    level: u32,
    base: u64,
    start: u64,
    end: u64,
) -> impl Iterator<Item = (usize, u64, u64, u64)> {
    let shift = level_shift(level);
    let first = ((start.max(base) - base) >> shift) as usize;
    let last =
        ((end.min(base + (PAGE_SIZE << (DIR_SHIFT * (level + 1)))) - 1 - base) >> shift) as usize;
    (first..=last).map(move |i| {
        let slot = base + ((i as u64) << shift);
        let slot_end = slot + (1 << shift);
        (i, slot, start.max(slot), end.min(slot_end))
    })
}

/// How many directories of levels `to..=from` the range `[start, end)` spans.
fn dirs_spanned(start: u64, end: u64, from: u32, to: u32) -> usize {
    (to..=from)
        .map(|k| {
            let shift = level_shift(k + 1);
            (((end - 1) >> shift) - (start >> shift) + 1) as usize
        })
        .sum()
}

/// A per-mirror page table. See the [module documentation](self).
///
/// # Invariants
///
/// - Every slot of every directory reachable from `root` is empty, a leaf
///   (leaves appear only in level-0 and level-1 directories), or a
///   directory owned by the table, linked through [`DirPage::into_slot`].
/// - `dirs`, `entries` and `pages` count what is reachable from `root`; they
///   and the slots change only under `lock`.
#[pin_data(PinnedDrop)]
pub(crate) struct HmmPt<A: DirAlloc> {
    root: DirPage,
    levels: u32,
    alloc: A,
    dirs: Atomic<u64>,
    entries: Atomic<u64>,
    pages: Atomic<u64>,
    split_fallbacks: Atomic<u64>,
    #[pin]
    lock: SpinLock<()>,
}

impl<A: DirAlloc> HmmPt<A> {
    /// Creates an empty table translating `levels` worth of address bits; the
    /// root directory is allocated with `GFP_KERNEL`.
    pub(crate) fn new(levels: PtLevels, alloc: A) -> impl PinInit<Self, Error> {
        Self::with_lock_class(levels, alloc, c"HmmPt::lock", kernel::static_lock_class!())
    }

    /// As [`Self::new`], with the writer lock in its own lockdep class: for
    /// a table whose lock nests inside another table's (the DMA table of
    /// `hmm_mirror::dma`, inside its mirror's table lock).
    pub(crate) fn with_lock_class(
        levels: PtLevels,
        alloc: A,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            root: alloc.alloc(GFP_KERNEL)?,
            levels: levels as u32,
            alloc,
            dirs: Atomic::new(0),
            entries: Atomic::new(0),
            pages: Atomic::new(0),
            split_fallbacks: Atomic::new(0),
            lock <- SpinLock::new((), name, key),
        }? Error)
    }

    /// One past the highest address the table translates.
    pub(crate) const fn limit(&self) -> u64 {
        1 << level_shift(self.levels)
    }

    fn top(&self) -> u32 {
        self.levels - 1
    }

    /// Checks that `[start, end)` is a non-empty, page-aligned range the
    /// table translates.
    pub(crate) fn check_range(&self, start: u64, end: u64) -> Result {
        if start >= end || (start | end) % PAGE_SIZE != 0 || end > self.limit() {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// What the table holds now.
    pub(crate) fn stats(&self) -> PtStats {
        PtStats {
            dirs: self.dirs.load(Relaxed),
            entries: self.entries.load(Relaxed),
            pages: self.pages.load(Relaxed),
            split_fallbacks: self.split_fallbacks.load(Relaxed),
        }
    }

    /// Allocates, with `gfp`, the directories a populate of `[start, end)`
    /// needs now: with 4 KiB entries, or with huge ones if `huge`. May sleep
    /// if `gfp` allows it; takes no lock.
    ///
    /// The table can change before the populate; the populate then fails
    /// with `EAGAIN` and the caller reserves again.
    pub(crate) fn reserve(&self, start: u64, end: u64, huge: bool, gfp: Flags) -> Result<Reserve> {
        self.check_range(start, end)?;
        let need = {
            let _rcu = rcu::read_lock();
            self.missing(self.root.dir(), self.top(), 0, start, end, u32::from(huge))
        };
        let mut dirs = KVec::with_capacity(need, gfp)?;
        for _ in 0..need {
            dirs.push(self.alloc.alloc(gfp)?, gfp)?;
        }
        Ok(Reserve { dirs })
    }

    /// Directories missing below `dir` (a level-`level` directory at `base`)
    /// for leaves of level `target` over `[start, end)`.
    fn missing(
        &self,
        dir: &Dir,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        target: u32,
    ) -> usize {
        if level == target {
            return 0;
        }
        let mut need = 0;
        for (i, slot, s, e) in slots_in(level, base, start, end) {
            // SAFETY: The caller holds the RCU read lock or the table lock.
            match unsafe { Dir::decode(dir.load(i)) } {
                Slot::Empty => need += dirs_spanned(s, e, level - 1, target),
                // Only a huge leaf in a level-1 directory, split for 4 KiB leaves.
                Slot::Leaf(_) => need += 1,
                Slot::Dir(child) => need += self.missing(child, level - 1, slot, s, e, target),
            }
        }
        need
    }

    /// Takes the writer lock. Must not be called with it held.
    pub(crate) fn lock(&self) -> PtGuard<'_, A> {
        PtGuard {
            pt: self,
            _guard: self.lock.lock(),
        }
    }

    /// The mapping that translates `addr`, if any.
    pub(crate) fn lookup(&self, addr: u64) -> Option<PtMapping> {
        if addr >= self.limit() {
            return None;
        }
        let _rcu = rcu::read_lock();
        let mut dir = self.root.dir();
        let mut level = self.top();
        loop {
            let i = ((addr >> level_shift(level)) as usize) & (DIR_SLOTS - 1);
            // SAFETY: We hold the RCU read lock.
            match unsafe { Dir::decode(dir.load(i)) } {
                Slot::Empty => return None,
                Slot::Leaf(entry) => {
                    let order = DIR_SHIFT * level;
                    return Some(PtMapping {
                        addr: addr & !((PAGE_SIZE << order) - 1),
                        entry,
                        order,
                    });
                }
                Slot::Dir(child) => {
                    dir = child;
                    level -= 1;
                }
            }
        }
    }

    /// Calls `f` on every mapping that overlaps `[start, end)`, in address
    /// order, in one RCU read-side critical section: `f` must not sleep.
    #[cfg_attr(not(any(CONFIG_KUNIT, hmm_rs_bench)), expect(dead_code))]
    pub(crate) fn walk(&self, start: u64, end: u64, mut f: impl FnMut(&PtMapping)) -> Result {
        self.walk_until(start, end, |m| {
            f(m);
            false
        })
        .map(|_| ())
    }

    /// [`Self::walk`], stopping at the first mapping for which `f` returns
    /// true; returns whether it stopped.
    pub(crate) fn walk_until(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&PtMapping) -> bool,
    ) -> Result<bool> {
        self.check_range(start, end)?;
        let _rcu = rcu::read_lock();
        Ok(self.walk_dir(self.root.dir(), self.top(), 0, start, end, &mut f))
    }

    /// Visits the mappings below `dir` that overlap `[start, end)` until
    /// `f` returns true; returns whether it did.
    fn walk_dir(
        &self,
        dir: &Dir,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        f: &mut impl FnMut(&PtMapping) -> bool,
    ) -> bool {
        for (i, slot, s, e) in slots_in(level, base, start, end) {
            // SAFETY: The caller holds the RCU read lock.
            let stop = match unsafe { Dir::decode(dir.load(i)) } {
                Slot::Empty => false,
                Slot::Leaf(entry) => f(&PtMapping {
                    addr: slot,
                    entry,
                    order: DIR_SHIFT * level,
                }),
                Slot::Dir(child) => self.walk_dir(child, level - 1, slot, s, e, f),
            };
            if stop {
                return true;
            }
        }
        false
    }
}

#[pinned_drop]
impl<A: DirAlloc> PinnedDrop for HmmPt<A> {
    fn drop(self: Pin<&mut Self>) {
        fn free(dir: &Dir, level: u32) {
            for slot in &dir.slots {
                let raw = slot.load(Mo::Relaxed);
                if level > 0 && raw != 0 && !PtEntry::is_leaf(raw) {
                    // SAFETY: A non-leaf, non-empty slot links a directory the
                    // table owns (type invariant); the table is going away, so
                    // nothing else can reach it.
                    let child = unsafe { DirPage::from_slot(raw) };
                    free(child.dir(), level - 1);
                }
            }
        }
        free(self.root.dir(), self.top());
    }
}

/// A cursor over a table's mappings in address order. It holds only an
/// address, so a driver may keep it across sleeps and table changes: each
/// step finds the first mapping at or after where the previous one ended.
pub(crate) struct PtCursor {
    next: u64,
    end: u64,
}

#[cfg_attr(
    not(CONFIG_KUNIT),
    expect(dead_code, reason = "Rust driver API; only KUnit uses it in-tree")
)]
impl PtCursor {
    /// A cursor over `[start, end)` of `pt`.
    pub(crate) fn new<A: DirAlloc>(pt: &HmmPt<A>, start: u64, end: u64) -> Result<Self> {
        pt.check_range(start, end)?;
        Ok(Self { next: start, end })
    }

    /// The next mapping overlapping what is left of the range, if any.
    pub(crate) fn next<A: DirAlloc>(&mut self, pt: &HmmPt<A>) -> Option<PtMapping> {
        if self.next >= self.end {
            return None;
        }
        let mut found = None;
        {
            let _rcu = rcu::read_lock();
            pt.walk_dir(pt.root.dir(), pt.top(), 0, self.next, self.end, &mut |m| {
                found = Some(*m);
                true
            });
        }
        self.next = found.map_or(self.end, |m| m.end());
        found
    }
}

/// The locked table: the only way to change it. See [`HmmPt::lock`].
pub(crate) struct PtGuard<'a, A: DirAlloc> {
    pt: &'a HmmPt<A>,
    _guard: SpinLockGuard<'a, ()>,
}

impl<A: DirAlloc> PtGuard<'_, A> {
    /// Counts a leaf of `order` appearing or going away.
    fn account(&self, order: u32, appear: bool) {
        if appear {
            self.account_new(1, 1 << order);
        } else {
            self.account_gone(1, 1 << order);
        }
    }

    /// Counts `entries` leaves of `pages` pages in all going away.
    fn account_gone(&self, entries: u64, pages: u64) {
        let (e, p) = (&self.pt.entries, &self.pt.pages);
        e.store(e.load(Relaxed) - entries, Relaxed);
        p.store(p.load(Relaxed) - pages, Relaxed);
    }

    /// Counts `entries` new leaves of `pages` pages in all.
    fn account_new(&self, entries: u64, pages: u64) {
        let (e, p) = (&self.pt.entries, &self.pt.pages);
        e.store(e.load(Relaxed) + entries, Relaxed);
        p.store(p.load(Relaxed) + pages, Relaxed);
    }

    fn add_dirs(&self, n: i64) {
        let d = &self.pt.dirs;
        d.store(d.load(Relaxed).wrapping_add_signed(n), Relaxed);
    }

    /// Fills a new level-0 directory with the 512 pieces of huge entry `huge`.
    fn split(&self, page: DirPage, huge: PtEntry) -> u64 {
        for (i, slot) in page.dir().slots.iter().enumerate() {
            slot.store(huge.subpage(i as u64).0, Mo::Relaxed);
        }
        self.add_dirs(1);
        let e = &self.pt.entries;
        e.store(e.load(Relaxed) + DIR_SLOTS as u64 - 1, Relaxed);
        // The Release store that links the directory publishes its slots.
        page.into_slot()
    }

    /// The level-`to` directory translating `addr`, creating directories and
    /// splitting a huge entry on the way with directories from `res`.
    fn descend(&self, res: &mut Reserve, addr: u64, to: u32) -> Result<&Dir> {
        let mut dir = self.pt.root.dir();
        let mut level = self.pt.top();
        while level > to {
            let i = ((addr >> level_shift(level)) as usize) & (DIR_SLOTS - 1);
            // SAFETY: We hold the table lock.
            dir = match unsafe { Dir::decode(dir.load(i)) } {
                Slot::Dir(child) => child,
                slot => {
                    let page = res.dirs.pop().ok_or(EAGAIN)?;
                    let raw = match slot {
                        Slot::Leaf(huge) => self.split(page, huge),
                        _ => {
                            self.add_dirs(1);
                            page.into_slot()
                        }
                    };
                    dir.store(i, raw);
                    // SAFETY: We hold the table lock; `raw` now links a directory.
                    match unsafe { Dir::decode(raw) } {
                        Slot::Dir(child) => child,
                        _ => unreachable!(),
                    }
                }
            };
            level -= 1;
        }
        Ok(dir)
    }

    /// Stores leaf `new` (of `order`) over slot value `old` at `addr`. An old
    /// leaf for the same page keeps its `DIRTY`; one for another page is
    /// handed back if dirty.
    fn put_leaf(
        &self,
        dir: &Dir,
        i: usize,
        addr: u64,
        new: PtEntry,
        order: u32,
        on_dirty: &mut impl FnMut(PtDirty),
    ) {
        let old = dir.slots[i].load(Mo::Relaxed);
        let mut new = new;
        if PtEntry::is_leaf(old) {
            let old = PtEntry(old);
            if old.pfn() == new.pfn() {
                new = new.with_flags(new.flags() | (old.flags() & PtFlags::DIRTY));
            } else if old.flags().contains(PtFlags::DIRTY) {
                on_dirty(PtDirty {
                    addr,
                    entry: old,
                    order,
                });
            }
        } else {
            self.account(order, true);
        }
        dir.store(i, new.0);
    }

    /// Whether `res` holds every directory a populate of `[start, end)`
    /// needs now (with 4 KiB entries, or a huge one if `huge`): for a
    /// caller with work to undo should the populate fail.
    pub(crate) fn has_room(&self, res: &Reserve, start: u64, end: u64, huge: bool) -> bool {
        let (root, top) = (self.pt.root.dir(), self.pt.top());
        self.pt.check_range(start, end).is_ok()
            && self.pt.missing(root, top, 0, start, end, u32::from(huge)) <= res.len()
    }

    /// Mirrors `entries.len()` consecutive 4 KiB pages from `start` (each entry
    /// is made `VALID`), with directories from `res`. Dirty entries it
    /// replaces with other pages are handed to `on_dirty`.
    ///
    /// Fails with `EINVAL` on a bad range and with `EAGAIN`, changing nothing,
    /// when `res` does not hold every directory needed (reserve again).
    pub(crate) fn populate(
        &mut self,
        res: &mut Reserve,
        start: u64,
        entries: &[PtEntry],
        on_dirty: impl FnMut(PtDirty),
    ) -> Result {
        self.populate_from(res, start, entries.iter().copied(), on_dirty)
    }

    /// [`Self::populate`] with the entries from `entries`, one per page,
    /// for callers that would otherwise build the array first (a device
    /// fault makes them from `hmm_range_fault()`'s output).
    pub(crate) fn populate_from(
        &mut self,
        res: &mut Reserve,
        start: u64,
        entries: impl ExactSizeIterator<Item = PtEntry>,
        mut on_dirty: impl FnMut(PtDirty),
    ) -> Result {
        let n = entries.len();
        let mut entries = entries;
        let len = u64::try_from(n).map_err(|_| EINVAL)?;
        let end = len
            .checked_mul(PAGE_SIZE)
            .and_then(|l| start.checked_add(l))
            .ok_or(EINVAL)?;
        self.pt.check_range(start, end)?;
        if self
            .pt
            .missing(self.pt.root.dir(), self.pt.top(), 0, start, end, 0)
            > res.len()
        {
            return Err(EAGAIN);
        }
        // What a device fault commits, page by page: kept tight, the new
        // leaves counted once per directory.
        for (addr, chunk_end) in huge_chunks(start, end) {
            let dir = self.descend(res, addr, 0)?;
            let base = addr & !(HUGE_SIZE - 1);
            let first = ((addr - base) >> PAGE_SHIFT) as usize;
            let last = ((chunk_end - base) >> PAGE_SHIFT) as usize;
            let mut appeared = 0;
            let slots = dir.slots[first..last].iter().zip(first..);
            for ((slot, i), e) in slots.zip(&mut entries) {
                let new = e.with_flags(e.flags() | PtFlags::VALID);
                if slot.load(Mo::Relaxed) == 0 {
                    appeared += 1;
                    slot.store(new.0, Mo::Release);
                } else {
                    let slot_addr = base + ((i as u64) << PAGE_SHIFT);
                    self.put_leaf(dir, i, slot_addr, new, 0, &mut on_dirty);
                }
            }
            self.account_new(appeared, appeared);
        }
        Ok(())
    }

    /// Mirrors the 2 MiB at `addr` (2 MiB aligned) with one huge `entry`
    /// (made `VALID`), whose PFN must be 512-page aligned. A level-0
    /// directory there is replaced, its dirty entries handed to `on_dirty`.
    ///
    /// Fails with `EINVAL` on a bad address or PFN, and with `EAGAIN`,
    /// changing nothing, when `res` lacks a needed directory.
    pub(crate) fn populate_huge(
        &mut self,
        res: &mut Reserve,
        addr: u64,
        entry: PtEntry,
        mut on_dirty: impl FnMut(PtDirty),
    ) -> Result {
        let end = addr.checked_add(HUGE_SIZE).ok_or(EINVAL)?;
        self.pt.check_range(addr, end)?;
        if addr % HUGE_SIZE != 0 || entry.pfn() % (DIR_SLOTS as u64) != 0 {
            return Err(EINVAL);
        }
        if self
            .pt
            .missing(self.pt.root.dir(), self.pt.top(), 0, addr, end, 1)
            > res.len()
        {
            return Err(EAGAIN);
        }
        let dir = self.descend(res, addr, 1)?;
        let i = ((addr >> level_shift(1)) as usize) & (DIR_SLOTS - 1);
        let new = entry.with_flags(entry.flags() | PtFlags::VALID);
        let raw = dir.slots[i].load(Mo::Relaxed);
        if raw != 0 && !PtEntry::is_leaf(raw) {
            // Replace the level-0 directory: hand back and uncount its leaves.
            // SAFETY: We hold the table lock.
            if let Slot::Dir(child) = unsafe { Dir::decode(raw) } {
                for (j, slot) in child.slots.iter().enumerate() {
                    let leaf = slot.load(Mo::Relaxed);
                    if leaf == 0 {
                        continue;
                    }
                    let leaf = PtEntry(leaf);
                    self.account(0, false);
                    if leaf.flags().contains(PtFlags::DIRTY) {
                        let a = addr + ((j as u64) << PAGE_SHIFT);
                        on_dirty(PtDirty {
                            addr: a,
                            entry: leaf,
                            order: 0,
                        });
                    }
                }
            }
            dir.store(i, 0);
            self.add_dirs(-1);
            // SAFETY: `raw` linked a directory the table owned; it is unlinked.
            unsafe { DirPage::from_slot(raw) }.free_after_rcu();
        }
        self.put_leaf(dir, i, addr, new, HUGE_ORDER, &mut on_dirty);
        Ok(())
    }

    /// Applies an event to `[start, end)`: every entry keeps only the flags
    /// in `keep`, and is removed if `keep` lacks `VALID`. An entry that loses
    /// `WRITE` or `VALID` while `DIRTY` is handed to `on_dirty` first and
    /// loses `DIRTY`. A huge entry partly in the range is split (see the
    /// module documentation for when that cannot allocate). Directories left
    /// empty are freed. Returns how many entries changed.
    pub(crate) fn update(
        &mut self,
        start: u64,
        end: u64,
        keep: PtFlags,
        mut on_dirty: impl FnMut(PtDirty),
    ) -> Result<usize> {
        let transform = |e: PtEntry| {
            let mut flags = e.flags() & keep;
            if !flags.contains(PtFlags::VALID | PtFlags::WRITE) {
                flags = flags & !PtFlags::DIRTY;
            }
            if flags.contains(PtFlags::VALID) {
                e.with_flags(flags)
            } else {
                PtEntry(0)
            }
        };
        self.modify_range(start, end, true, &transform, &mut on_dirty)
    }

    /// Removes every entry overlapping `[start, end)`, a huge entry partly
    /// in the range whole (never split: for tables whose huge entries
    /// cannot be cut, as one DMA mapping cannot be unmapped in part).
    /// Dirty entries are handed to `on_dirty`. Returns how many went.
    pub(crate) fn remove_whole(
        &mut self,
        start: u64,
        end: u64,
        mut on_dirty: impl FnMut(PtDirty),
    ) -> Result<usize> {
        self.modify_range(start, end, false, &|_| PtEntry(0), &mut on_dirty)
    }

    /// Marks the writable entries in `[start, end)` `DIRTY`: the device wrote
    /// them. A huge entry partly in the range is marked whole. Returns how many
    /// entries changed.
    pub(crate) fn set_dirty(&mut self, start: u64, end: u64) -> Result<usize> {
        let transform = |e: PtEntry| {
            if e.flags().contains(PtFlags::WRITE) {
                e.with_flags(e.flags() | PtFlags::DIRTY)
            } else {
                e
            }
        };
        self.modify_range(start, end, false, &transform, &mut |_| {})
    }

    /// Removes everything, handing dirty entries to `on_dirty`; afterwards
    /// the table holds no directory but its root.
    pub(crate) fn clear(&mut self, on_dirty: impl FnMut(PtDirty)) {
        let limit = self.pt.limit();
        // The full range is always valid.
        let _ = self.update(0, limit, PtFlags::NONE, on_dirty);
    }

    /// Checks `[start, end)` and [`Self::modify`]s it from the root.
    fn modify_range(
        &mut self,
        start: u64,
        end: u64,
        split: bool,
        transform: &impl Fn(PtEntry) -> PtEntry,
        on_dirty: &mut impl FnMut(PtDirty),
    ) -> Result<usize> {
        self.pt.check_range(start, end)?;
        let (root, top) = (self.pt.root.dir(), self.pt.top());
        Ok(self.modify(root, top, 0, start, end, split, transform, on_dirty))
    }

    /// Replaces each leaf `e` overlapping `[start, end)` below `dir` with
    /// `transform(e)`, splitting partly covered huge leaves if `split`.
    #[expect(clippy::too_many_arguments)]
    fn modify(
        &mut self,
        dir: &Dir,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        split: bool,
        transform: &impl Fn(PtEntry) -> PtEntry,
        on_dirty: &mut impl FnMut(PtDirty),
    ) -> usize {
        let mut changed = 0;
        // Leaves removed here, counted once at the end (each count is a
        // kernel-atomic helper call).
        let mut gone = 0;
        for (i, slot, s, e) in slots_in(level, base, start, end) {
            let mut raw = dir.slots[i].load(Mo::Relaxed);
            if PtEntry::is_leaf(raw) {
                let old = PtEntry(raw);
                let order = DIR_SHIFT * level;
                let new = transform(old);
                if new == old {
                    continue;
                }
                let partial = s != slot || e != slot + (PAGE_SIZE << order);
                if !(split && partial) {
                    if old.flags().contains(PtFlags::DIRTY) && !new.flags().contains(PtFlags::DIRTY)
                    {
                        on_dirty(PtDirty {
                            addr: slot,
                            entry: old,
                            order,
                        });
                    }
                    if new.0 == 0 {
                        gone += 1;
                    }
                    dir.store(i, new.0);
                    changed += 1;
                    continue;
                }
                match self.pt.alloc.alloc(GFP_NOWAIT | flags::__GFP_NOWARN) {
                    Ok(page) => {
                        raw = self.split(page, old);
                        dir.store(i, raw);
                    }
                    Err(_) => {
                        let f = &self.pt.split_fallbacks;
                        f.store(f.load(Relaxed) + 1, Relaxed);
                        changed += self.modify(
                            dir,
                            level,
                            base,
                            slot,
                            slot + (PAGE_SIZE << order),
                            false,
                            transform,
                            on_dirty,
                        );
                        continue;
                    }
                }
            }
            // SAFETY: We hold the table lock.
            if let Slot::Dir(child) = unsafe { Dir::decode(raw) } {
                changed += self.modify(child, level - 1, slot, s, e, split, transform, on_dirty);
                if child.is_empty() {
                    dir.store(i, 0);
                    self.add_dirs(-1);
                    // SAFETY: `raw` linked a directory the table owned; it is
                    // unlinked now, and readers may still see it until a grace
                    // period ends.
                    unsafe { DirPage::from_slot(raw) }.free_after_rcu();
                }
            }
        }
        if gone != 0 {
            self.account_gone(gone, gone << (DIR_SHIFT * level));
        }
        changed
    }
}

#[cfg(CONFIG_KUNIT = "y")]
mod tests;
