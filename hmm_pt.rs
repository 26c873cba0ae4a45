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

use core::{mem::ManuallyDrop, ops, ptr::NonNull};
use kernel::{
    alloc::{flags, Flags},
    page::Page,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu, LockClassKey, SpinLock, SpinLockGuard,
    },
};

use crate::shim;

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

/// How many address bits a table translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PtLevels {
    /// 48-bit addresses (x86-64 4-level paging).
    Four = 4,
    /// 57-bit addresses (x86-64 5-level paging).
    Five = 5,
}

/// Flags of a leaf entry: bits 0..11 of a [`PtEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtFlags(u64);

impl PtFlags {
    /// No flag.
    pub(crate) const NONE: Self = Self(0);
    /// The entry maps memory; set on every leaf.
    pub(crate) const VALID: Self = Self(1 << 0);
    /// The device may write.
    pub(crate) const WRITE: Self = Self(1 << 1);
    /// The device (may have) written: the page must be dirtied when the
    /// device loses write access.
    pub(crate) const DIRTY: Self = Self(1 << 2);
    /// The page lives in device memory.
    pub(crate) const DEVICE: Self = Self(1 << 3);
    /// The device has exclusive access: the CPU must fault to touch the page
    /// (`make_device_exclusive`), which removes this entry.
    pub(crate) const EXCLUSIVE: Self = Self(1 << 4);
    /// Bits 8..11 belong to the device driver.
    pub(crate) const DRIVER: Self = Self(0xf << 8);
    /// Every flag bit.
    pub(crate) const ALL: Self = Self((1 << PAGE_SHIFT) - 1);

    /// Driver-private bits `bits` (0..15), placed in [`Self::DRIVER`].
    #[cfg_attr(
        not(CONFIG_KUNIT),
        expect(dead_code, reason = "Rust driver API; only KUnit uses it in-tree")
    )]
    pub(crate) const fn driver(bits: u64) -> Self {
        Self((bits << 8) & Self::DRIVER.0)
    }

    /// The flag bits.
    pub(crate) const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub(crate) const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl ops::BitOr for PtFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitAnd for PtFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl ops::Not for PtFlags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0 & Self::ALL.0)
    }
}

/// A leaf entry: a page frame number above bit 12 and [`PtFlags`] below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtEntry(u64);

impl PtEntry {
    /// Largest page frame number an entry holds.
    pub(crate) const MAX_PFN: u64 = u64::MAX >> PAGE_SHIFT;

    /// A valid entry for `pfn` with `flags` (`VALID` is implied).
    ///
    /// Fails with `EINVAL` if `pfn` exceeds [`Self::MAX_PFN`].
    pub(crate) fn new(pfn: u64, flags: PtFlags) -> Result<Self> {
        if pfn > Self::MAX_PFN {
            return Err(EINVAL);
        }
        Ok(Self(pfn << PAGE_SHIFT | (flags | PtFlags::VALID).0))
    }

    /// As [`Self::new`], for a `pfn` the caller has checked against
    /// [`Self::MAX_PFN`] (higher bits would be cut).
    pub(crate) const fn from_checked_pfn(pfn: u64, flags: PtFlags) -> Self {
        Self((pfn & Self::MAX_PFN) << PAGE_SHIFT | (flags.0 | PtFlags::VALID.0))
    }

    /// The page frame number (of the first page, for a huge entry).
    pub(crate) const fn pfn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }

    /// The flags.
    pub(crate) const fn flags(self) -> PtFlags {
        PtFlags(self.0 & PtFlags::ALL.0)
    }

    const fn is_leaf(raw: u64) -> bool {
        raw & PtFlags::VALID.0 != 0
    }

    const fn with_flags(self, flags: PtFlags) -> Self {
        Self(self.0 & !PtFlags::ALL.0 | flags.0)
    }

    /// The entry of page `index` of this huge entry.
    const fn subpage(self, index: u64) -> Self {
        Self(self.0 + (index << PAGE_SHIFT))
    }
}

/// A mapping found in the table: `entry` maps `1 << order` pages at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtMapping {
    /// First virtual address mapped.
    pub(crate) addr: u64,
    /// The leaf entry.
    pub(crate) entry: PtEntry,
    /// 0 for a 4 KiB entry, [`HUGE_ORDER`] for a huge one.
    pub(crate) order: u32,
}

impl PtMapping {
    /// One past the last address mapped.
    pub(crate) const fn end(&self) -> u64 {
        self.addr + (PAGE_SIZE << self.order)
    }

    /// The page frame number backing `addr`, which must lie in the mapping.
    #[cfg_attr(not(any(CONFIG_KUNIT, hmm_rs_bench)), expect(dead_code))]
    pub(crate) const fn pfn_at(&self, addr: u64) -> u64 {
        self.entry.pfn() + ((addr - self.addr) >> PAGE_SHIFT)
    }
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

/// One directory: a 4 KiB page of slots.
#[repr(C)]
struct Dir {
    slots: [SlotWord; DIR_SLOTS],
}

const _: () = assert!(core::mem::size_of::<Dir>() == PAGE_SIZE as usize);

/// The contents of a slot.
enum Slot<'a> {
    Empty,
    Leaf(PtEntry),
    Dir(&'a Dir),
}

impl Dir {
    /// Decodes slot value `raw`.
    ///
    /// # Safety
    ///
    /// `raw` must have been read from a slot of a live directory of a table,
    /// and the caller must hold that table's lock or an RCU read lock, since
    /// before the read, for all of `'a`.
    unsafe fn decode<'a>(raw: u64) -> Slot<'a> {
        if raw == 0 {
            Slot::Empty
        } else if PtEntry::is_leaf(raw) {
            Slot::Leaf(PtEntry(raw))
        } else {
            // SAFETY: A slot that is neither empty nor a leaf holds the address
            // of a directory (`DirPage::into_slot`). Writers free a directory
            // only after unlinking it, and then only once an RCU grace period
            // has passed (or while holding the lock the caller holds), so it
            // stays valid for `'a` by the caller's guarantee.
            Slot::Dir(unsafe { &*(raw as usize as *const Dir) })
        }
    }

    fn load(&self, index: usize) -> u64 {
        self.slots[index].load(Mo::Acquire)
    }

    fn store(&self, index: usize, raw: u64) {
        self.slots[index].store(raw, Mo::Release)
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.load(Mo::Relaxed) == 0)
    }
}

/// An owned directory page.
///
/// # Invariants
///
/// `self.0` is the kernel address of an order-0 page allocated by
/// [`Page::alloc_page`] and owned by this object, zeroed when allocated.
pub(crate) struct DirPage(NonNull<Dir>);

// SAFETY: A `DirPage` owns its page; pages can be freed from any context.
unsafe impl Send for DirPage {}

// SAFETY: Through `&DirPage` one only gets `&Dir`, whose slots are atomics.
unsafe impl Sync for DirPage {}

impl DirPage {
    /// Allocates a zeroed directory page.
    pub(crate) fn alloc(gfp: Flags) -> Result<Self> {
        let page = ManuallyDrop::new(Page::alloc_page(gfp | flags::__GFP_ZERO)?);
        // SAFETY: `page` is a valid page; on 64-bit kernels every page has a
        // permanent kernel address.
        let addr = unsafe { shim::hmm_rs_page_address(page.as_ptr()) };
        // INVARIANT: ownership of the zeroed page moves from `page` (not dropped)
        // to the new object.
        Ok(Self(NonNull::new(addr.cast()).ok_or(ENOMEM)?))
    }

    fn dir(&self) -> &Dir {
        // SAFETY: By the type invariant, `self.0` is a live page we own, and
        // `Dir` is one page of atomics, for which any bit pattern is valid.
        unsafe { self.0.as_ref() }
    }

    /// Gives up ownership, returning the slot value that links the directory.
    fn into_slot(self) -> u64 {
        ManuallyDrop::new(self).0.as_ptr() as usize as u64
    }

    /// Takes back ownership of the directory linked by slot value `raw`.
    ///
    /// # Safety
    ///
    /// `raw` must come from [`Self::into_slot`], and ownership of that
    /// directory must not be taken back twice.
    unsafe fn from_slot(raw: u64) -> Self {
        // SAFETY: `raw` came from `into_slot`, which returned a non-null
        // address; ownership moves back by the caller's guarantee.
        Self(unsafe { NonNull::new_unchecked(raw as usize as *mut Dir) })
    }

    fn page(&self) -> NonNull<kernel::bindings::page> {
        // SAFETY: By the type invariant, `self.0` is the address of a page.
        let page = unsafe { shim::hmm_rs_virt_to_page(self.0.as_ptr().cast()) };
        // SAFETY: `virt_to_page` of a valid kernel address is never null.
        unsafe { NonNull::new_unchecked(page) }
    }

    /// Frees the directory after an RCU grace period, for readers that may
    /// still be looking at it.
    fn free_after_rcu(self) {
        let page = ManuallyDrop::new(self).page();
        // SAFETY: We own the page (type invariant) and give it up here; it is
        // not on any list, so its `rcu_head` is free for the deferred free.
        unsafe { shim::hmm_rs_free_page_rcu(page.as_ptr()) };
    }
}

impl Drop for DirPage {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, we own this order-0 page, which came
        // from `Page::alloc_page`, as `Page::drop` would free it.
        unsafe { kernel::bindings::__free_pages(self.page().as_ptr(), 0) };
    }
}

/// Where a table's directories come from; tests plug in one that fails.
pub(crate) trait DirAlloc: Send + Sync {
    /// Allocates one zeroed directory.
    fn alloc(&self, gfp: Flags) -> Result<DirPage>;
}

/// Directories from the page allocator.
pub(crate) struct PageDirs;

impl DirAlloc for PageDirs {
    fn alloc(&self, gfp: Flags) -> Result<DirPage> {
        DirPage::alloc(gfp)
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

/// A dirty entry handed back by a writer: the device may have written the
/// `1 << order` pages of `entry` at `addr`, and can no longer write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtDirty {
    /// First virtual address.
    pub(crate) addr: u64,
    /// The entry as it was, with `DIRTY` set.
    pub(crate) entry: PtEntry,
    /// 0 for a 4 KiB entry, [`HUGE_ORDER`] for a huge one.
    pub(crate) order: u32,
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
        let mut addr = start;
        while addr < end {
            let chunk_end = end.min((addr | (HUGE_SIZE - 1)) + 1);
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
            addr = chunk_end;
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

#[kernel::prelude::kunit_tests(hmm_rs_pt)]
mod tests {
    use super::*;
    use kernel::sync::atomic::{Acquire, Release};

    const GIB: u64 = 1 << 30;
    const RW: PtFlags = PtFlags::WRITE;
    /// What a write-protect event keeps.
    const WP: PtFlags = PtFlags(PtFlags::ALL.0 & !PtFlags::WRITE.0);

    fn table<A: DirAlloc>(levels: PtLevels, alloc: A) -> Result<Pin<KBox<HmmPt<A>>>> {
        KBox::pin_init(HmmPt::new(levels, alloc), GFP_KERNEL)
    }

    fn entries(pfn: u64, n: u64, flags: PtFlags) -> Result<KVec<PtEntry>> {
        let mut v = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for i in 0..n {
            v.push(PtEntry::new(pfn + i, flags)?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Populates `n` pages at `addr` with PFNs from `pfn`, reserving first.
    fn fill<A: DirAlloc>(pt: &HmmPt<A>, addr: u64, pfn: u64, n: u64, flags: PtFlags) -> Result {
        let mut res = pt.reserve(addr, addr + n * PAGE_SIZE, false, GFP_KERNEL)?;
        let e = entries(pfn, n, flags)?;
        pt.lock().populate(&mut res, addr, &e, |_| {})
    }

    fn fill_huge<A: DirAlloc>(pt: &HmmPt<A>, addr: u64, pfn: u64, flags: PtFlags) -> Result {
        let mut res = pt.reserve(addr, addr + HUGE_SIZE, true, GFP_KERNEL)?;
        pt.lock()
            .populate_huge(&mut res, addr, PtEntry::new(pfn, flags)?, |_| {})
    }

    fn pfn_of<A: DirAlloc>(pt: &HmmPt<A>, addr: u64) -> Option<u64> {
        pt.lookup(addr).map(|m| m.pfn_at(addr))
    }

    #[test]
    fn boundaries() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let top = pt.limit() - PAGE_SIZE;
        // Address 0, the top page, and a page on each side of the 2 MiB,
        // 1 GiB and 512 GiB boundaries.
        fill(&pt, 0, 100, 1, RW)?;
        fill(&pt, top, 200, 1, RW)?;
        for (k, b) in [HUGE_SIZE, GIB, 512 * GIB].into_iter().enumerate() {
            fill(&pt, b - PAGE_SIZE, 1000 * (k as u64 + 1), 2, RW)?;
        }
        assert_eq!(pfn_of(&pt, 0), Some(100));
        assert_eq!(pfn_of(&pt, top), Some(200));
        assert_eq!(pfn_of(&pt, top - PAGE_SIZE), None);
        assert_eq!(pfn_of(&pt, PAGE_SIZE), None);
        for (k, b) in [HUGE_SIZE, GIB, 512 * GIB].into_iter().enumerate() {
            assert_eq!(pfn_of(&pt, b - PAGE_SIZE), Some(1000 * (k as u64 + 1)));
            assert_eq!(pfn_of(&pt, b), Some(1000 * (k as u64 + 1) + 1));
            assert_eq!(pfn_of(&pt, b + PAGE_SIZE), None);
        }
        // Level-0 dirs: [0,2M), [2M,4M), [1G-2M,1G), [1G,1G+2M), two at
        // 512G, one at the top; level 1: [0,1G), [1G,2G), two at 512G, top;
        // level 2: [0,512G), [512G,1T), top.
        let s = pt.stats();
        assert_eq!(s.entries, 8);
        assert_eq!(s.pages, 8);
        assert_eq!(s.dirs, 7 + 5 + 3);
        assert_eq!(s.bytes(), (s.dirs + 1) * PAGE_SIZE);
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.stats().entries, 0);
        assert_eq!(pt.lookup(0), None);
        Ok(())
    }

    #[test]
    fn bad_ranges_are_einval() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let lim = pt.limit();
        for (s, e) in [
            (0, 0),
            (PAGE_SIZE, 0),
            (1, PAGE_SIZE),
            (0, PAGE_SIZE + 1),
            (lim - PAGE_SIZE, lim + PAGE_SIZE),
            (lim, lim + PAGE_SIZE),
        ] {
            assert_eq!(pt.check_range(s, e), Err(EINVAL));
            assert!(pt.reserve(s, e, false, GFP_KERNEL).is_err());
            assert_eq!(pt.lock().update(s, e, PtFlags::NONE, |_| {}), Err(EINVAL));
            assert_eq!(pt.lock().set_dirty(s, e), Err(EINVAL));
            assert!(PtCursor::new(&pt, s, e).is_err());
        }
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        let one = entries(1, 1, RW)?;
        // Wrapping, beyond the table, unaligned.
        assert_eq!(
            pt.lock().populate(&mut res, !(PAGE_SIZE - 1), &one, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(pt.lock().populate(&mut res, lim, &one, |_| {}), Err(EINVAL));
        assert_eq!(pt.lock().populate(&mut res, 8, &one, |_| {}), Err(EINVAL));
        assert_eq!(pt.lock().populate(&mut res, 0, &[], |_| {}), Err(EINVAL));
        let huge = PtEntry::new(512, RW)?;
        assert_eq!(
            pt.lock().populate_huge(&mut res, PAGE_SIZE, huge, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(
            pt.lock()
                .populate_huge(&mut res, 0, PtEntry::new(513, RW)?, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(PtEntry::new(PtEntry::MAX_PFN + 1, RW), Err(EINVAL));
        assert_eq!(pt.lookup(lim), None);
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn five_levels_reach_57_bits() -> Result {
        let four = table(PtLevels::Four, PageDirs)?;
        let five = table(PtLevels::Five, PageDirs)?;
        let high = 1u64 << 56;
        assert!(four
            .reserve(high, high + PAGE_SIZE, false, GFP_KERNEL)
            .is_err());
        fill(&five, high, 42, 1, RW)?;
        assert_eq!(pfn_of(&five, high), Some(42));
        assert_eq!(five.stats().dirs, 4);
        Ok(())
    }

    #[test]
    fn overlapping_populates_keep_dirty_of_same_page() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        fill(&pt, 0, 10, 4, RW)?;
        assert_eq!(pt.lock().set_dirty(0, 2 * PAGE_SIZE)?, 2);
        // Pages 0-1 dirty. Refill pages 1-2: page 1 keeps its PFN (stays
        // dirty), page 2 changes PFN (was clean, nothing handed back).
        let mut res = pt.reserve(PAGE_SIZE, 3 * PAGE_SIZE, false, GFP_KERNEL)?;
        let e = [PtEntry::new(11, RW)?, PtEntry::new(99, RW)?];
        let mut dirty = KVec::new();
        pt.lock().populate(&mut res, PAGE_SIZE, &e, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert!(dirty.is_empty());
        assert!(pt
            .lookup(PAGE_SIZE)
            .unwrap()
            .entry
            .flags()
            .contains(PtFlags::DIRTY));
        assert_eq!(pfn_of(&pt, 2 * PAGE_SIZE), Some(99));
        // Page 0 now gets another page: its dirty entry is handed back.
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        pt.lock()
            .populate(&mut res, 0, &[PtEntry::new(7, RW)?], |d| {
                dirty.push(d, GFP_ATOMIC).unwrap()
            })?;
        assert_eq!(dirty.len(), 1);
        assert_eq!(
            (dirty[0].addr, dirty[0].entry.pfn(), dirty[0].order),
            (0, 10, 0)
        );
        assert_eq!(pt.stats().entries, 4);
        Ok(())
    }

    #[test]
    fn update_hands_back_dirty_and_prunes() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        fill(&pt, GIB, 0, 8, RW)?;
        fill(&pt, GIB + 8 * PAGE_SIZE, 8, 8, PtFlags::NONE)?;
        // Read-only entries cannot be dirtied.
        assert_eq!(pt.lock().set_dirty(GIB, GIB + 16 * PAGE_SIZE)?, 8);
        let mut dirty = KVec::new();
        let n = pt.lock().update(GIB, GIB + 16 * PAGE_SIZE, WP, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert_eq!(n, 8);
        assert_eq!(dirty.len(), 8);
        let m = pt.lookup(GIB).unwrap();
        assert!(!m.entry.flags().contains(PtFlags::WRITE));
        assert!(!m.entry.flags().contains(PtFlags::DIRTY));
        // Write-protecting again changes nothing and hands back nothing.
        assert_eq!(
            pt.lock()
                .update(GIB, GIB + 16 * PAGE_SIZE, WP, |_| panic!())?,
            0
        );
        assert_eq!(
            pt.lock()
                .update(GIB, GIB + 16 * PAGE_SIZE, PtFlags::NONE, |_| panic!())?,
            16
        );
        assert_eq!(
            pt.stats(),
            PtStats {
                dirs: 0,
                entries: 0,
                pages: 0,
                split_fallbacks: 0
            }
        );
        Ok(())
    }

    #[test]
    fn huge_entries_split_when_partly_changed() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let base = 3 * HUGE_SIZE;
        fill_huge(&pt, base, 512 * 7, RW)?;
        let s = pt.stats();
        assert_eq!((s.dirs, s.entries, s.pages), (2, 1, 512));
        let m = pt.lookup(base + 5 * PAGE_SIZE).unwrap();
        assert_eq!(
            (m.addr, m.order, m.pfn_at(base + 5 * PAGE_SIZE)),
            (base, HUGE_ORDER, 512 * 7 + 5)
        );
        // A whole-entry update keeps it huge and hands back one dirty entry.
        pt.lock()
            .set_dirty(base + PAGE_SIZE, base + 2 * PAGE_SIZE)?;
        let mut dirty = KVec::new();
        pt.lock().update(base, base + HUGE_SIZE, WP, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert_eq!(dirty.len(), 1);
        assert_eq!((dirty[0].addr, dirty[0].order), (base, HUGE_ORDER));
        assert_eq!(pt.stats().dirs, 2);
        // Unmapping one page splits it into 511 small entries.
        pt.lock().update(
            base + PAGE_SIZE,
            base + 2 * PAGE_SIZE,
            PtFlags::NONE,
            |_| {},
        )?;
        let s = pt.stats();
        assert_eq!(
            (s.dirs, s.entries, s.pages, s.split_fallbacks),
            (3, 511, 511, 0)
        );
        assert_eq!(pt.lookup(base + PAGE_SIZE), None);
        let m = pt.lookup(base + 2 * PAGE_SIZE).unwrap();
        assert_eq!((m.order, m.entry.pfn()), (0, 512 * 7 + 2));
        // A 4 KiB populate inside a huge entry splits it too.
        fill_huge(&pt, base + HUGE_SIZE, 0, RW)?;
        fill(&pt, base + HUGE_SIZE + PAGE_SIZE, 5000, 1, RW)?;
        assert_eq!(pfn_of(&pt, base + HUGE_SIZE + PAGE_SIZE), Some(5000));
        assert_eq!(pfn_of(&pt, base + HUGE_SIZE + 2 * PAGE_SIZE), Some(2));
        // A huge populate over a level-0 directory replaces it.
        fill_huge(&pt, base, 1024, RW)?;
        let s = pt.stats();
        assert_eq!((s.dirs, s.entries, s.pages), (3, 1 + 512, 1024));
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    /// Allows `left` allocations, then fails.
    struct FailAfter {
        left: Atomic<u64>,
    }

    impl DirAlloc for FailAfter {
        fn alloc(&self, gfp: Flags) -> Result<DirPage> {
            let left = self.left.load(Relaxed);
            if left == 0 {
                return Err(ENOMEM);
            }
            self.left.store(left - 1, Relaxed);
            DirPage::alloc(gfp)
        }
    }

    #[test]
    fn allocation_failure_leaves_table_consistent() -> Result {
        // The root, then two of the three directories a first page needs.
        let pt = table(
            PtLevels::Four,
            FailAfter {
                left: Atomic::new(1 + 2),
            },
        )?;
        assert_eq!(
            pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL).err(),
            Some(ENOMEM)
        );
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.lookup(0), None);
        // A reservation made for a smaller range is short: EAGAIN, no change.
        pt.alloc.left.store(100, Relaxed);
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        assert_eq!(res.len(), 3);
        let two = entries(1, 2, RW)?;
        assert_eq!(
            pt.lock()
                .populate(&mut res, 512 * GIB - PAGE_SIZE, &two, |_| {}),
            Err(EAGAIN)
        );
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.lookup(512 * GIB), None);
        assert_eq!(res.len(), 3);
        let e = entries(1, 1, RW)?;
        pt.lock().populate(&mut res, 0, &e, |_| {})?;
        assert_eq!(res.len(), 0);
        // A huge entry that cannot split is updated whole.
        let mut res = pt.reserve(HUGE_SIZE, 2 * HUGE_SIZE, true, GFP_KERNEL)?;
        pt.lock()
            .populate_huge(&mut res, HUGE_SIZE, PtEntry::new(512, RW)?, |_| {})?;
        pt.alloc.left.store(0, Relaxed);
        pt.lock()
            .update(HUGE_SIZE, HUGE_SIZE + PAGE_SIZE, WP, |_| {})?;
        let s = pt.stats();
        assert_eq!((s.split_fallbacks, s.entries, s.dirs), (1, 2, 3));
        let m = pt.lookup(HUGE_SIZE + 100 * PAGE_SIZE).unwrap();
        assert_eq!(m.order, HUGE_ORDER);
        assert!(!m.entry.flags().contains(PtFlags::WRITE));
        pt.lock()
            .update(HUGE_SIZE, HUGE_SIZE + PAGE_SIZE, PtFlags::NONE, |_| {})?;
        assert_eq!(pt.lookup(HUGE_SIZE + 100 * PAGE_SIZE), None);
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn cursor_visits_in_order_across_changes() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let addrs = [
            0,
            5 * PAGE_SIZE,
            HUGE_SIZE,
            GIB,
            512 * GIB + 3 * PAGE_SIZE,
            pt.limit() - PAGE_SIZE,
        ];
        for (i, a) in addrs.iter().enumerate() {
            if *a == HUGE_SIZE {
                fill_huge(&pt, *a, 512, RW)?;
            } else {
                fill(&pt, *a, i as u64, 1, RW)?;
            }
        }
        let mut cur = PtCursor::new(&pt, 0, pt.limit())?;
        for a in &addrs[..3] {
            assert_eq!(cur.next(&pt).map(|m| m.addr), Some(*a));
        }
        // Remove the next one and add one behind the cursor: neither is seen.
        pt.lock()
            .update(GIB, GIB + PAGE_SIZE, PtFlags::NONE, |_| {})?;
        fill(&pt, PAGE_SIZE, 77, 1, RW)?;
        for a in &addrs[4..] {
            assert_eq!(cur.next(&pt).map(|m| m.addr), Some(*a));
        }
        assert_eq!(cur.next(&pt), None);
        // A cursor starting inside a huge entry returns it.
        let mut cur = PtCursor::new(&pt, HUGE_SIZE + PAGE_SIZE, 2 * HUGE_SIZE)?;
        assert_eq!(cur.next(&pt).map(|m| m.order), Some(HUGE_ORDER));
        assert_eq!(cur.next(&pt), None);
        let mut n = 0;
        pt.walk(0, pt.limit(), |_| n += 1)?;
        assert_eq!(n, addrs.len());
        Ok(())
    }

    /// A table shared by the test (the writer) and a reader thread bound to
    /// another CPU, and what the reader saw.
    #[pin_data]
    struct Race {
        #[pin]
        pt: HmmPt<PageDirs>,
        /// The reader runs.
        started: Atomic<bool>,
        /// Where the writer is: [`BEFORE`] its loop, `i + 1` in its
        /// iteration `i`, [`AFTER`] it.
        progress: Atomic<u64>,
        /// What the reader saw, stored when it is stopped.
        seen: RaceSeen,
    }

    /// [`Race::progress`] before the writer's loop.
    const BEFORE: u64 = 0;
    /// [`Race::progress`] after the writer's loop.
    const AFTER: u64 = u64::MAX;

    /// Counts of the reader's lookups; but for `reads` and `bad`, only of
    /// lookups that started and ended while the writer was in its loop.
    struct RaceSeen {
        /// Lookups.
        reads: Atomic<u64>,
        /// Lookups while the writer was in its loop.
        during: Atomic<u64>,
        /// Lookups that saw the writer in another iteration than the
        /// lookup before: how often the two interleaved.
        switches: Atomic<u64>,
        /// Lookups that found no entry, and that found one.
        empty: Atomic<u64>,
        found: Atomic<u64>,
        /// Entries found writable, and write-protected.
        writable: Atomic<u64>,
        protected: Atomic<u64>,
        /// Huge entries found.
        huge: Atomic<u64>,
        /// Torn entries, by lookups and by walks (see [`race_ok`]).
        bad: Atomic<u64>,
    }

    impl RaceSeen {
        const fn new() -> Self {
            Self {
                reads: Atomic::new(0),
                during: Atomic::new(0),
                switches: Atomic::new(0),
                empty: Atomic::new(0),
                found: Atomic::new(0),
                writable: Atomic::new(0),
                protected: Atomic::new(0),
                huge: Atomic::new(0),
                bad: Atomic::new(0),
            }
        }
    }

    const RACE_START: u64 = GIB - HUGE_SIZE;
    const RACE_END: u64 = GIB + HUGE_SIZE;

    /// The only PFN the race test ever maps at `addr` (512-aligned at 2 MiB).
    fn race_pfn(addr: u64) -> u64 {
        addr / PAGE_SIZE + 512 * 12345
    }

    /// Whether `m` is something the race test's writer could have stored.
    ///
    /// A reader must see every slot as the writer last stored it, or as it
    /// was before; anything else is a torn entry: a 64-bit slot read half
    /// before and half after a store, a directory pointer taken for a leaf
    /// (or a leaf followed as a directory), a slot of a directory freed
    /// (and reused) under the reader, or a huge entry split into 4 KiB
    /// entries with the wrong PFNs. The writer stores at each address only
    /// [`race_pfn`] of it, as a 4 KiB or a 2 MiB entry, with `VALID | WRITE`
    /// (populate) or `VALID` (after a write-protect: `DIRTY` is never set),
    /// so a torn entry shows up as another PFN, other flags, another order,
    /// a misaligned mapping or one outside the race's range.
    fn race_ok(m: &PtMapping) -> bool {
        let f = m.entry.flags();
        (m.order == 0 || m.order == HUGE_ORDER)
            && m.addr % (PAGE_SIZE << m.order) == 0
            && m.addr >= RACE_START
            && m.end() <= RACE_END
            && m.entry.pfn() == race_pfn(m.addr)
            && (f == (PtFlags::VALID | PtFlags::WRITE) || f == PtFlags::VALID)
    }

    /// The reader: random lookups, and a walk every fourth step, until told
    /// to stop; counts what it saw into `Race::seen` then.
    ///
    /// # Safety
    ///
    /// `data` is a `Race` kept alive by the thread's creator until it has
    /// stopped the thread.
    unsafe extern "C" fn race_reader(data: *mut core::ffi::c_void) -> core::ffi::c_int {
        // SAFETY: By the function's safety requirement.
        let race = unsafe { &*data.cast::<Race>() };
        let mut rng = Rng(7);
        let (mut reads, mut during, mut switches) = (0u64, 0u64, 0u64);
        let (mut empty, mut found, mut writable, mut protected, mut huge) = (0, 0, 0, 0, 0);
        let mut bad = 0u64;
        let mut last = BEFORE;
        race.started.store(true, Release);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            let a = RACE_START + (rng.next() & 1023) * PAGE_SIZE;
            let before = race.progress.load(Acquire);
            let got = race.pt.lookup(a);
            let after = race.progress.load(Acquire);
            if let Some(m) = &got {
                let torn = !race_ok(m) || a < m.addr || a >= m.end() || m.pfn_at(a) != race_pfn(a);
                bad += u64::from(torn);
            }
            if before != BEFORE && after != AFTER {
                during += 1;
                switches += u64::from(after != last);
                last = after;
                match got {
                    None => empty += 1,
                    Some(m) => {
                        found += 1;
                        if m.entry.flags().contains(PtFlags::WRITE) {
                            writable += 1;
                        } else {
                            protected += 1;
                        }
                        huge += u64::from(m.order == HUGE_ORDER);
                    }
                }
            }
            if reads & 3 == 0 {
                let _ = race.pt.walk(RACE_START, RACE_END, |m| {
                    bad += u64::from(!race_ok(m));
                });
            }
            reads += 1;
        }
        let s = &race.seen;
        s.reads.store(reads, Relaxed);
        s.during.store(during, Relaxed);
        s.switches.store(switches, Relaxed);
        s.empty.store(empty, Relaxed);
        s.found.store(found, Relaxed);
        s.writable.store(writable, Relaxed);
        s.protected.store(protected, Relaxed);
        s.huge.store(huge, Relaxed);
        s.bad.store(bad, Relaxed);
        0
    }

    /// A reader on one CPU looks up and walks the table while the test, on
    /// another, populates, write-protects and clears it, freeing and
    /// allocating directories under the reader: no lookup may see a torn
    /// entry, and the reader must have seen the writer's every kind of
    /// entry while it wrote.
    #[test]
    fn readers_race_with_writer() -> Result {
        use crate::kunit_helpers::kunit_thread::{self, Thread};
        use kernel::time::{Delta, Instant, Monotonic};
        // The writer runs at least `MIN_ITERS` iterations, and at least
        // `WRITE_MS`: on an emulated CPU with KASAN, a second or so.
        const MIN_ITERS: u64 = 300;
        const MAX_ITERS: u64 = 100_000;
        const WRITE_MS: i64 = 300;

        let cpus = kunit_thread::two_cpus("readers_race_with_writer");
        assert!(cpus.is_some());
        let Some((writer_cpu, reader_cpu)) = cpus else {
            return Err(ENODEV);
        };
        let race = KBox::pin_init(
            try_pin_init!(Race {
                pt <- HmmPt::new(PtLevels::Four, PageDirs),
                started: Atomic::new(false),
                progress: Atomic::new(BEFORE),
                seen: RaceSeen::new(),
            }? Error),
            GFP_KERNEL,
        )?;
        let pinned = kunit_thread::pin_current(writer_cpu)?;
        let data = core::ptr::from_ref::<Race>(&race).cast_mut().cast();
        // SAFETY: `race_reader` runs until stopped; `race` outlives `reader`,
        // which is dropped (stopped) below before `race` is.
        let reader = unsafe { Thread::spawn_on(reader_cpu, race_reader, data, c"hmm_rs_reader") }?;
        // The writer starts only once the reader runs, on its own CPU.
        let started = kunit_thread::wait_until(5000, || race.started.load(Acquire));
        let writer = || -> Result<u64> {
            let pt = &race.pt;
            let mut rng = Rng(11);
            let t = Instant::<Monotonic>::now();
            let mut i = 0;
            while i < MIN_ITERS || (i < MAX_ITERS && t.elapsed() < Delta::from_millis(WRITE_MS)) {
                race.progress.store(i + 1, Release);
                // Populate a random run, sometimes a huge entry, write-protect
                // part of the range, then clear part (freeing directories
                // under the reader).
                let p = rng.below(1024 - 64);
                let n = 1 + rng.below(64);
                let a = RACE_START + p * PAGE_SIZE;
                let mut e = KVec::with_capacity(n as usize, GFP_KERNEL)?;
                for k in 0..n {
                    e.push(PtEntry::new(race_pfn(a + k * PAGE_SIZE), RW)?, GFP_KERNEL)?;
                }
                let mut res = pt.reserve(a, a + n * PAGE_SIZE, false, GFP_KERNEL)?;
                pt.lock().populate(&mut res, a, &e, |_| {})?;
                if rng.below(4) == 0 {
                    let h = RACE_START + rng.below(2) * HUGE_SIZE;
                    let mut res = pt.reserve(h, h + HUGE_SIZE, true, GFP_KERNEL)?;
                    let huge = PtEntry::new(race_pfn(h), RW)?;
                    pt.lock().populate_huge(&mut res, h, huge, |_| {})?;
                }
                let len = (1 + rng.below(600)) * PAGE_SIZE;
                let q = RACE_START + rng.below(1024) * PAGE_SIZE;
                pt.lock().update(q, (q + len).min(RACE_END), WP, |_| {})?;
                let q = RACE_START + rng.below(1024) * PAGE_SIZE;
                pt.lock()
                    .update(q, (q + len).min(RACE_END), PtFlags::NONE, |_| {})?;
                i += 1;
            }
            race.progress.store(AFTER, Release);
            pt.lock().clear(|_| {});
            Ok(i)
        };
        let result = if started { writer() } else { Err(ETIMEDOUT) };
        // Whatever happened, the reader must be gone before `race` is, and
        // before any assertion (a failed one ends this thread at once).
        drop(reader);
        drop(pinned);
        let s = &race.seen;
        let (reads, during, switches) = (
            s.reads.load(Relaxed),
            s.during.load(Relaxed),
            s.switches.load(Relaxed),
        );
        let (empty, found) = (s.empty.load(Relaxed), s.found.load(Relaxed));
        let (writable, protected) = (s.writable.load(Relaxed), s.protected.load(Relaxed));
        let (huge, bad) = (s.huge.load(Relaxed), s.bad.load(Relaxed));
        let (wcpu, rcpu) = (writer_cpu.as_u32(), reader_cpu.as_u32());
        let iters = *result.as_ref().unwrap_or(&0);
        pr_info!(
            "readers_race_with_writer: writer on CPU {wcpu}, reader on CPU {rcpu}: {iters} \
             iterations; {reads} reads, {during} while writing, {switches} writer switches \
             seen, {empty} empty, {found} found ({writable} writable, {protected} \
             write-protected, {huge} huge), {bad} torn\n"
        );
        assert!(started);
        result?;
        // No torn entry, by lookups or walks.
        assert_eq!(bad, 0);
        // The two overlapped: the reader read throughout the writer's run,
        // and saw it move on between its lookups, again and again.
        assert!(during >= 100);
        assert!(switches >= 10);
        // It saw the table in each state the writer makes.
        assert!(empty > 0);
        assert!(found > 0);
        assert!(writable > 0);
        assert!(protected > 0);
        assert_eq!(race.pt.stats().dirs, 0);
        Ok(())
    }

    /// xorshift64*: deterministic randomness for the model test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const WIN_PAGES: usize = 1024;

    /// The trivially correct model: per-page entries in four 4 MiB windows
    /// placed on the 0, 1 GiB, 512 GiB and top-of-table boundaries, and
    /// whether each 2 MiB half of a window is one huge entry.
    struct Model {
        bases: [u64; 4],
        pages: KVec<u64>,
        huge: [[bool; 2]; 4],
    }

    impl Model {
        fn new(limit: u64) -> Result<Self> {
            let mut pages = KVec::with_capacity(4 * WIN_PAGES, GFP_KERNEL)?;
            for _ in 0..4 * WIN_PAGES {
                pages.push(0, GFP_KERNEL)?;
            }
            Ok(Self {
                bases: [
                    0,
                    GIB - HUGE_SIZE,
                    512 * GIB - HUGE_SIZE,
                    limit - 2 * HUGE_SIZE,
                ],
                pages,
                huge: [[false; 2]; 4],
            })
        }

        fn addr(&self, w: usize, p: usize) -> u64 {
            self.bases[w] + (p as u64) * PAGE_SIZE
        }

        fn at(&mut self, w: usize, p: usize) -> &mut u64 {
            &mut self.pages[w * WIN_PAGES + p]
        }

        /// Expected directory count for the entries the model holds.
        fn dirs(&self) -> u64 {
            let mut seen = KVec::<(u32, u64)>::new();
            for w in 0..4 {
                for p in 0..WIN_PAGES {
                    if self.pages[w * WIN_PAGES + p] == 0 {
                        continue;
                    }
                    let a = self.addr(w, p);
                    let from = if self.huge[w][p / 512] { 1 } else { 0 };
                    for level in from..3 {
                        let key = (level, a >> level_shift(level + 1));
                        if !seen.contains(&key) {
                            seen.push(key, GFP_KERNEL).unwrap();
                        }
                    }
                }
            }
            seen.len() as u64
        }
    }

    /// A fixed PFN for page `p` of window `w`, 512-aligned at 2 MiB.
    fn canonical_pfn(w: usize, p: usize) -> u64 {
        (1 << 30) + (w * WIN_PAGES + p) as u64
    }

    fn entry_flags(rng: &mut Rng) -> PtFlags {
        let mut f = PtFlags::driver(rng.below(16));
        if rng.below(2) == 0 {
            f = f | PtFlags::WRITE;
        }
        if rng.below(4) == 0 {
            f = f | PtFlags::DEVICE;
        }
        f
    }

    fn sorted(mut v: KVec<PtDirty>) -> KVec<PtDirty> {
        v.sort_unstable_by_key(|d| d.addr);
        v
    }

    /// Compares every page of the model with the table, by lookup and by walk.
    fn check_all<A: DirAlloc>(pt: &HmmPt<A>, m: &Model) {
        let mut entries = 0;
        let mut pages = 0;
        for w in 0..4 {
            for p in 0..WIN_PAGES {
                let a = m.addr(w, p);
                let want = m.pages[w * WIN_PAGES + p];
                let got = pt.lookup(a).map_or(0, |mp| {
                    PtEntry(mp.entry.0).subpage((a - mp.addr) / PAGE_SIZE).0
                });
                assert_eq!(got, want);
                if want != 0 {
                    pages += 1;
                    if !m.huge[w][p / 512] || p % 512 == 0 {
                        entries += 1;
                    }
                }
            }
            let mut walked = 0;
            pt.walk(m.bases[w], m.addr(w, WIN_PAGES), |mp| {
                walked += 1 << mp.order
            })
            .unwrap();
            let valid = (0..WIN_PAGES)
                .filter(|p| m.pages[w * WIN_PAGES + p] != 0)
                .count();
            assert_eq!(walked, valid);
        }
        let s = pt.stats();
        assert_eq!((s.entries, s.pages, s.split_fallbacks), (entries, pages, 0));
        assert_eq!(s.dirs, m.dirs());
    }

    fn random_ops(seed: u64, ops: usize) -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let mut m = Model::new(pt.limit())?;
        let mut rng = Rng(seed);
        for op in 0..ops {
            let w = rng.below(4) as usize;
            let mut got = KVec::new();
            let mut want = KVec::new();
            match rng.below(100) {
                0..40 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(64.min(WIN_PAGES - p) as u64) as usize;
                    // Half the time each page's own PFN, so that pages are
                    // often refaulted to the same page (which keeps DIRTY).
                    let pfn = match rng.below(2) {
                        0 => canonical_pfn(w, p),
                        _ => rng.below(1 << 30),
                    };
                    let flags = entry_flags(&mut rng);
                    let e = entries(pfn, n as u64, flags)?;
                    let mut res = pt.reserve(m.addr(w, p), m.addr(w, p + n), false, GFP_KERNEL)?;
                    pt.lock().populate(&mut res, m.addr(w, p), &e, |d| {
                        got.push(d, GFP_ATOMIC).unwrap()
                    })?;
                    for (i, new) in e.iter().enumerate() {
                        let a = m.addr(w, p + i);
                        m.huge[w][(p + i) / 512] = false;
                        let old = *m.at(w, p + i);
                        let mut new = new.0 | PtFlags::VALID.0;
                        if old != 0 && PtEntry(old).pfn() == PtEntry(new).pfn() {
                            new |= old & PtFlags::DIRTY.0;
                        } else if old & PtFlags::DIRTY.0 != 0 {
                            want.push(
                                PtDirty {
                                    addr: a,
                                    entry: PtEntry(old),
                                    order: 0,
                                },
                                GFP_KERNEL,
                            )?;
                        }
                        *m.at(w, p + i) = new;
                    }
                }
                40..50 => {
                    let h = rng.below(2) as usize;
                    let p = h * 512;
                    let pfn = match rng.below(2) {
                        0 => canonical_pfn(w, p),
                        _ => rng.below(1 << 20) * 512,
                    };
                    let flags = entry_flags(&mut rng);
                    let entry = PtEntry::new(pfn, flags)?;
                    let a = m.addr(w, p);
                    let mut res = pt.reserve(a, a + HUGE_SIZE, true, GFP_KERNEL)?;
                    pt.lock()
                        .populate_huge(&mut res, a, entry, |d| got.push(d, GFP_ATOMIC).unwrap())?;
                    let first = *m.at(w, p);
                    let mut carry = 0;
                    if m.huge[w][h] {
                        if PtEntry(first).pfn() == pfn {
                            carry = first & PtFlags::DIRTY.0;
                        } else if first & PtFlags::DIRTY.0 != 0 {
                            want.push(
                                PtDirty {
                                    addr: a,
                                    entry: PtEntry(first),
                                    order: HUGE_ORDER,
                                },
                                GFP_KERNEL,
                            )?;
                        }
                    } else {
                        for i in 0..512 {
                            let old = *m.at(w, p + i);
                            if old & PtFlags::DIRTY.0 != 0 {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, p + i),
                                        entry: PtEntry(old),
                                        order: 0,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                        }
                    }
                    for i in 0..512 {
                        *m.at(w, p + i) = entry.subpage(i as u64).0 | carry;
                    }
                    m.huge[w][h] = true;
                }
                50..75 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(600.min(WIN_PAGES - p) as u64) as usize;
                    let keep = [PtFlags::NONE, WP, PtFlags::ALL][rng.below(3) as usize];
                    pt.lock()
                        .update(m.addr(w, p), m.addr(w, p + n), keep, |d| {
                            got.push(d, GFP_ATOMIC).unwrap()
                        })?;
                    let change = |old: u64| {
                        let mut f = old & keep.0 & PtFlags::ALL.0;
                        if f & (PtFlags::VALID.0 | PtFlags::WRITE.0)
                            != PtFlags::VALID.0 | PtFlags::WRITE.0
                        {
                            f &= !PtFlags::DIRTY.0;
                        }
                        if f & PtFlags::VALID.0 == 0 {
                            0
                        } else {
                            old & !PtFlags::ALL.0 | f
                        }
                    };
                    for h in 0..2 {
                        let (s, e) = (p.max(h * 512), (p + n).min(h * 512 + 512));
                        if s >= e {
                            continue;
                        }
                        let first = *m.at(w, h * 512);
                        if m.huge[w][h]
                            && first != 0
                            && change(first) != first
                            && s == h * 512
                            && e == h * 512 + 512
                        {
                            if first & PtFlags::DIRTY.0 != 0
                                && change(first) & PtFlags::DIRTY.0 == 0
                            {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, h * 512),
                                        entry: PtEntry(first),
                                        order: HUGE_ORDER,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                            for i in 0..512 {
                                let v = *m.at(w, h * 512 + i);
                                *m.at(w, h * 512 + i) = change(v);
                            }
                            continue;
                        }
                        if m.huge[w][h] && first != 0 && change(first) != first {
                            m.huge[w][h] = false;
                        }
                        if m.huge[w][h] {
                            continue;
                        }
                        for i in s..e {
                            let old = *m.at(w, i);
                            let new = change(old);
                            if old & PtFlags::DIRTY.0 != 0 && new & PtFlags::DIRTY.0 == 0 {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, i),
                                        entry: PtEntry(old),
                                        order: 0,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                            *m.at(w, i) = new;
                        }
                    }
                }
                75..97 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(600.min(WIN_PAGES - p) as u64) as usize;
                    pt.lock().set_dirty(m.addr(w, p), m.addr(w, p + n))?;
                    for h in 0..2 {
                        let (s, e) = (p.max(h * 512), (p + n).min(h * 512 + 512));
                        let (s, e) = if m.huge[w][h] && s < e {
                            (h * 512, h * 512 + 512)
                        } else {
                            (s, e)
                        };
                        for i in s..e {
                            let v = m.at(w, i);
                            if *v & PtFlags::WRITE.0 != 0 {
                                *v |= PtFlags::DIRTY.0;
                            }
                        }
                    }
                }
                _ => {
                    pt.lock().clear(|d| got.push(d, GFP_ATOMIC).unwrap());
                    for w in 0..4 {
                        for h in 0..2 {
                            let first = *m.at(w, h * 512);
                            let huge = m.huge[w][h];
                            for i in 0..512 {
                                let old = *m.at(w, h * 512 + i);
                                if old & PtFlags::DIRTY.0 != 0 && (!huge || i == 0) {
                                    let order = if huge { HUGE_ORDER } else { 0 };
                                    let addr = m.addr(w, h * 512 + i);
                                    want.push(
                                        PtDirty {
                                            addr,
                                            entry: PtEntry(if huge { first } else { old }),
                                            order,
                                        },
                                        GFP_KERNEL,
                                    )?;
                                }
                                *m.at(w, h * 512 + i) = 0;
                            }
                            m.huge[w][h] = false;
                        }
                    }
                    assert_eq!(pt.stats().dirs, 0);
                }
            }
            let (got, want) = (sorted(got), sorted(want));
            if got != want {
                pr_err!("seed {seed:#x} op {op}: dirty hand-back differs from the model\n");
            }
            assert_eq!(got, want);
            if op % 64 == 0 || op + 1 == ops {
                check_all(&pt, &m);
            }
        }
        Ok(())
    }

    #[test]
    fn matches_model_seed_1() -> Result {
        random_ops(0x9e37_79b9_7f4a_7c15, 3000)
    }

    #[test]
    fn matches_model_seed_2() -> Result {
        random_ops(0x0123_4567_89ab_cdef, 3000)
    }
}
