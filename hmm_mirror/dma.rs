// SPDX-License-Identifier: GPL-2.0

//! DMA-mapped mirrors: the DMA addresses of a mirror's pages for the
//! device it is bound to.
//!
//! A real device reads memory through DMA addresses, usually behind an
//! IOMMU, not through PFNs. A mirror registered with a `struct device`
//! keeps, beside its page table, a [`DmaTable`]: a second [`HmmPt`] of the
//! same shape whose leaves hold the DMA address (page aligned, where the
//! mirror table has the PFN) of one mapping each:
//!
//! - a device fault maps each page it commits, a 2 MiB huge entry as one
//!   mapping of the whole folio (`dma_map_page()`), 4 KiB pages linked
//!   into their block's IOVA range where the device is behind an IOMMU
//!   ([`iova`]; one IOTLB sync per commit), else each mapped alone;
//!   bidirectional for a write fault, to-device for a read fault (leaf
//!   `WRITE` says which). The old mappings of the range are unmapped
//!   first. A mapping that fails fails the fault (`ENOMEM`, `EIO`) with
//!   nothing of the chunk mapped or mirrored;
//! - an event that removes or write-protects mirror entries unmaps their
//!   mappings after the driver's `update()`, before the mirror table changes
//!   and dirty bits go to the pages: a mapping's direction cannot change in
//!   place, so write protection unmaps too and the next device read maps
//!   the page again, to-device. A huge mapping is unmapped whole even when
//!   the event covers part of it (a DMA mapping cannot be cut); linked
//!   pages are unlinked a contiguous run at a time, one IOTLB flush each;
//! - device-private pages are never mapped (the device owns them), nor are
//!   exclusive entries: the mirror table shows those by PFN.
//!
//! Every leaf is a live mapping, and every leaf carries `DIRTY`: the table
//! hands back every dirty leaf it removes, which is exactly when the
//! mapping must go. Mappings are made and unmapped under the table's lock
//! (a spinlock: the DMA API maps and unmaps in atomic context), which also
//! guards `bound`: once [`DmaTable::unbind`] (the device is going away) has
//! emptied the table, nothing is mapped for the device again.

use kernel::{
    bindings,
    device::Device,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
    },
};

mod iova;

use iova::{IovaBlocks, Unlinks, LINKED};

use crate::{
    hmm_pt::{
        HmmPt, PageDirs, PtDirty, PtEntry, PtFlags, PtGuard, PtLevels, PtMapping, Reserve,
        HUGE_ORDER, PAGE_SIZE,
    },
    shim, stats,
};

/// What every leaf of a DMA table carries (see the module documentation).
const MAPPED: PtFlags = PtFlags::DIRTY;

/// Creates the fault-injection knobs of DMA mappings; module init.
pub(crate) fn init() {
    // SAFETY: No preconditions; called once.
    unsafe { shim::hmm_rs_shim_init() };
}

/// Removes them; module exit.
pub(crate) fn exit() {
    // SAFETY: Paired with `init`.
    unsafe { shim::hmm_rs_shim_exit() };
}

/// One page (or huge page) a fault commits: its PFN and order.
#[derive(Clone, Copy)]
pub(crate) struct ToMap {
    pub(crate) pfn: u64,
    pub(crate) order: u32,
}

/// The DMA mappings of one mirror for its device.
///
/// # Invariants
///
/// - Every leaf of `pt` carries [`MAPPED`] and is, bidirectional if the
///   leaf has `WRITE`, either a mapping for `dev` made by `hmm_rs_dma_map`
///   of the leaf's size, or, with [`LINKED`], a 4 KiB page linked into
///   its block's range in `iova` at its offset.
/// - Once `bound` is false (changed under `pt`'s lock), `pt` is empty and
///   stays so.
#[pin_data(PinnedDrop)]
pub(crate) struct DmaTable {
    #[pin]
    pt: HmmPt<PageDirs>,
    #[pin]
    iova: IovaBlocks,
    dev: ARef<Device>,
    bound: Atomic<bool>,
}

impl DmaTable {
    /// An empty table of mappings for `dev`.
    pub(crate) fn new(levels: PtLevels, dev: ARef<Device>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            pt <- HmmPt::with_lock_class(
                levels,
                PageDirs,
                c"DmaTable::pt",
                kernel::static_lock_class!()
            ),
            iova <- IovaBlocks::new(),
            dev,
            bound: Atomic::new(true),
        }? Error)
    }

    /// Directories for a commit of `[start, end)` ([`Self::commit_huge`]
    /// if `huge`, else [`Self::commit_pages`]), allocated with `GFP_KERNEL`
    /// before any lock is taken (may sleep). If the table changes meanwhile, the commit fails with
    /// `EAGAIN` before mapping anything: reserve again.
    pub(crate) fn reserve(&self, start: u64, end: u64, huge: bool) -> Result<Reserve> {
        // After a huge page had to be mapped page by page, as for 4 KiB.
        let huge = huge && stats::DMA_HUGE_SPLIT.get() == 0;
        self.pt.reserve(start, end, huge, GFP_KERNEL)
    }

    /// The `struct device` (`Device::as_raw` is the kernel crate's own).
    fn raw_dev(&self) -> *mut bindings::device {
        // `Device` is a transparent wrapper of `struct device`.
        core::ptr::from_ref::<Device>(&self.dev).cast_mut().cast()
    }

    fn map(&self, p: ToMap, write: bool) -> Result<PtEntry> {
        let mut dma = 0u64;
        // SAFETY: `dev` is a live device (we hold a reference); `p.pfn` is a
        // page of `1 << p.order` pages the caller's fault found mapped.
        let r = unsafe {
            shim::hmm_rs_dma_map(self.raw_dev(), p.pfn as usize, p.order, write, &mut dma)
        };
        if r != 0 {
            stats::DMA_MAP_ERRORS.add(1);
            return Err(Error::from_errno(r));
        }
        stats::DMA_MAPS.add(1);
        let w = if write { PtFlags::WRITE } else { PtFlags::NONE };
        Ok(PtEntry::from_checked_pfn(dma / PAGE_SIZE, MAPPED | w))
    }

    /// Unmaps a leaf (not [`LINKED`]) the table handed back.
    fn unmap(&self, d: PtDirty) {
        let write = d.entry.flags().contains(PtFlags::WRITE);
        // SAFETY: By the type invariant, the leaf is a mapping for `dev` of
        // this size and direction, and it has just left the table.
        unsafe {
            shim::hmm_rs_dma_unmap(self.raw_dev(), d.entry.pfn() * PAGE_SIZE, d.order, write)
        };
        stats::DMA_UNMAPS.add(1);
    }

    /// Runs `f` on the locked `table` (this table's) with a callback that
    /// unmaps the leaves `f` takes out of it: a mapping of its own at once,
    /// linked pages a run at a time, the last run before this returns.
    fn removing<'g, R>(
        &self,
        table: &mut PtGuard<'g, PageDirs>,
        f: impl FnOnce(&mut PtGuard<'g, PageDirs>, &mut dyn FnMut(PtDirty)) -> R,
    ) -> R {
        // SAFETY: `dev` is alive (we hold a reference); `table` holds this
        // table's lock past `runs`' end at this function's; only leaves
        // taken out of the table reach it.
        let mut runs = unsafe { Unlinks::new(&self.iova, self.raw_dev()) };
        let mut each = |d: PtDirty| {
            if d.entry.flags().contains(LINKED) {
                runs.add(&d);
            } else {
                self.unmap(d);
            }
        };
        f(table, &mut each)
    }

    /// Unmaps the 4 KiB mappings of their own in `buf` (made by
    /// [`Self::map_into`]).
    fn unmap_all(&self, buf: &[PtEntry]) {
        for &entry in buf {
            self.unmap(PtDirty {
                addr: 0,
                entry,
                order: 0,
            });
        }
    }

    /// Maps 4 KiB `pages` into `buf`, or on any failure, nothing: what it
    /// mapped is unmapped again.
    fn map_into(
        &self,
        buf: &mut KVec<PtEntry>,
        pages: impl Iterator<Item = ToMap>,
        write: bool,
    ) -> Result {
        for p in pages {
            let r = self.map(p, write).and_then(|e| {
                buf.push_within_capacity(e).map_err(|e| {
                    self.unmap_all(&[e.0]);
                    ENOMEM
                })
            });
            if let Err(e) = r {
                self.unmap_all(buf);
                buf.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Locks the table for a commit of `[start, end)` (a huge entry if
    /// `huge`): unmaps the range's old mappings, then checks that `res`
    /// still holds what populating it needs.
    ///
    /// Errors: `ENODEV` once unbound; `EAGAIN`, before anything is mapped,
    /// if `res` is short (removing the old mappings freed directories it
    /// counted on): reserve again.
    fn lock_for_commit(
        &self,
        res: &Reserve,
        start: u64,
        end: u64,
        huge: bool,
    ) -> Result<PtGuard<'_, PageDirs>> {
        let mut table = self.pt.lock();
        if !self.bound.load(Relaxed) {
            return Err(ENODEV);
        }
        self.removing(&mut table, |t, un| t.remove_whole(start, end, un))?;
        if !table.has_room(res, start, end, huge) {
            return Err(EAGAIN);
        }
        Ok(table)
    }

    /// Maps the huge page at `pfn` (512-page aligned) for the device as one
    /// mapping and records it at `start` (2 MiB aligned); or, should its
    /// IOVA not be 2 MiB aligned, page by page (`buf`: room for 512).
    /// Called with the mirror's table lock held, before the mirror table
    /// is populated. Errors as [`Self::commit_pages`].
    pub(crate) fn commit_huge(
        &self,
        res: &mut Reserve,
        start: u64,
        pfn: u64,
        write: bool,
        buf: &mut KVec<PtEntry>,
    ) -> Result {
        let end = start + (PAGE_SIZE << HUGE_ORDER);
        let mut table = self.lock_for_commit(res, start, end, true)?;
        let huge = ToMap {
            pfn,
            order: HUGE_ORDER,
        };
        let e = self.map(huge, write)?;
        let mapping = PtDirty {
            addr: start,
            entry: e,
            order: HUGE_ORDER,
        };
        // The IOVA allocator aligns a 2 MiB mapping to its size.
        if e.pfn() % (1 << HUGE_ORDER) == 0 {
            let r = table.populate_huge(res, start, e, |_| {});
            if r.is_err() {
                self.unmap(mapping);
            }
            return r;
        }
        self.unmap(mapping);
        stats::DMA_HUGE_SPLIT.add(1);
        // Reserves count 4 KiB entries from now on.
        if !table.has_room(res, start, end, false) {
            return Err(EAGAIN);
        }
        let one = |k| ToMap {
            pfn: pfn + k,
            order: 0,
        };
        self.populate_pages(
            &mut table,
            res,
            start,
            &mut (0..1u64 << HUGE_ORDER).map(one),
            write,
            buf,
        )
    }

    /// Maps 4 KiB `pages` for the device and records them from `start`,
    /// one after another; `buf` is scratch space with room for them.
    /// Called with the mirror's table lock held, before the mirror table
    /// is populated. The range's old mappings are unmapped first.
    ///
    /// Errors: `ENODEV` once unbound; `ENOMEM` or `EIO` if a mapping fails
    /// (nothing of the range is mapped then); `EAGAIN`, before mapping
    /// anything, if `res` is short: reserve again.
    pub(crate) fn commit_pages(
        &self,
        res: &mut Reserve,
        start: u64,
        mut pages: impl ExactSizeIterator<Item = ToMap>,
        write: bool,
        buf: &mut KVec<PtEntry>,
    ) -> Result {
        let end = start + pages.len() as u64 * PAGE_SIZE;
        let mut table = self.lock_for_commit(res, start, end, false)?;
        self.populate_pages(&mut table, res, start, &mut pages, write, buf)
    }

    /// Maps `pages` (4 KiB, from `start` on, within one block) into `buf`,
    /// linked into the block's IOVA range if it can have one, else each
    /// alone, and populates the locked table with them; unmaps them all
    /// if that fails. The range holds no leaves.
    fn populate_pages<'g>(
        &self,
        table: &mut PtGuard<'g, PageDirs>,
        res: &mut Reserve,
        start: u64,
        pages: &mut impl Iterator<Item = ToMap>,
        write: bool,
        buf: &mut KVec<PtEntry>,
    ) -> Result {
        buf.clear();
        // SAFETY: `dev` is alive (we hold a reference); `table` holds this
        // table's lock; the range has no leaves (the caller's promise); the
        // caller's fault found `pages` mapped.
        if !unsafe { self.iova.link(self.raw_dev(), start, pages, write, buf)? } {
            self.map_into(buf, pages, write)?;
        }
        let r = table.populate(res, start, buf, |_| {});
        if r.is_err() {
            self.removing(table, |_, un| {
                for (i, &entry) in buf.iter().enumerate() {
                    let addr = start + i as u64 * PAGE_SIZE;
                    un(PtDirty {
                        addr,
                        entry,
                        order: 0,
                    });
                }
            });
        }
        r
    }

    /// Unmaps the mappings overlapping `[start, end)` (huge ones whole).
    /// Never sleeps. Returns how many went.
    pub(crate) fn remove(&self, start: u64, end: u64) -> usize {
        // Whole pages (events and faults are page aligned anyway): an
        // unaligned range must not leave a mapping behind.
        let start = start & !(PAGE_SIZE - 1);
        let end = end.min(self.pt.limit()).next_multiple_of(PAGE_SIZE);
        if start >= end {
            return 0;
        }
        // Page aligned and within the table: cannot fail.
        let mut table = self.pt.lock();
        self.removing(&mut table, |t, un| t.remove_whole(start, end, un))
            .unwrap_or(0)
    }

    /// Unmaps everything.
    pub(crate) fn clear(&self) {
        let mut table = self.pt.lock();
        self.removing(&mut table, |t, un| t.clear(un));
    }

    /// The device is going away: unmaps everything, and nothing is mapped
    /// for it again (commits fail with `ENODEV`).
    pub(crate) fn unbind(&self) {
        let mut table = self.pt.lock();
        self.removing(&mut table, |t, un| t.clear(un));
        // INVARIANT: emptied under the lock; commit checks under it.
        self.bound.store(false, Relaxed);
    }

    /// Whether the table still maps for its device.
    pub(crate) fn is_bound(&self) -> bool {
        self.bound.load(Relaxed)
    }

    /// The mapping of `addr`: its DMA address (of the first byte of the
    /// mapping), order and whether the device may write through it.
    pub(crate) fn lookup(&self, addr: u64) -> Option<DmaMapping> {
        self.pt.lookup(addr).map(DmaMapping::from)
    }

    /// Pages mapped now (a huge mapping counts 512) and mappings.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let s = self.pt.stats();
        (s.pages, s.entries)
    }
}

/// One DMA mapping of a mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DmaMapping {
    /// First virtual address mapped.
    pub(crate) addr: u64,
    /// DMA address of `addr`.
    pub(crate) dma: u64,
    /// 0 for 4 KiB, [`HUGE_ORDER`] for 2 MiB.
    pub(crate) order: u32,
    /// Bidirectional (the device may write), else to the device only.
    pub(crate) write: bool,
}

impl From<PtMapping> for DmaMapping {
    fn from(m: PtMapping) -> Self {
        Self {
            addr: m.addr,
            dma: m.entry.pfn() * PAGE_SIZE,
            order: m.order,
            write: m.entry.flags().contains(PtFlags::WRITE),
        }
    }
}

#[pinned_drop]
impl PinnedDrop for DmaTable {
    fn drop(self: Pin<&mut Self>) {
        self.clear();
    }
}
