// SPDX-License-Identifier: GPL-2.0

//! IOVA-linked DMA mappings: one IOVA range per 2 MiB block of a DMA
//! table.
//!
//! Behind an IOMMU, mapping 4 KiB pages one by one (`dma_map_page()`)
//! costs an IOTLB sync per page to map and a flush per page to unmap.
//! Instead, the pages a commit maps in one 2 MiB block are linked into the
//! block's own 2 MiB IOVA range, each at its offset in the block
//! (`dma_iova_link()`, physically contiguous pages as one link), and the
//! IOTLB is synced once for them (`dma_iova_sync()`). Pages leaving the
//! table are unlinked a run at a time (contiguous, one block, one
//! direction; [`Unlinks`]), one flush per run (`dma_iova_unlink()`). A
//! block's range is allocated when a commit first links into it and freed
//! when its last page is unlinked, so an empty table holds none.
//!
//! Everything here runs under the DMA table's lock (a spinlock: the IOVA
//! allocator and `iommu_map()` take `GFP_ATOMIC` memory), so a block's
//! bookkeeping is allocated with `GFP_NOWAIT`. Where there is no range
//! (no IOMMU, `dma_iova=N`, no memory), [`IovaBlocks::link`] says so and
//! the table maps the pages one by one; a leaf's [`LINKED`] flag says
//! which kind of mapping it is.

use kernel::{
    bindings,
    prelude::*,
    xarray::{AllocKind, XArray},
};

use super::ToMap;
use crate::{
    hmm_pt::{PtDirty, PtEntry, PtFlags, HUGE_SIZE, PAGE_SIZE},
    shim, stats,
};

/// In a DMA table: the leaf is a page linked into its block's IOVA range.
pub(super) const LINKED: PtFlags = PtFlags::LINKED;

/// The block of `addr`: its index in [`IovaBlocks`].
fn block(addr: u64) -> usize {
    (addr / HUGE_SIZE) as usize
}

/// The offset of `addr` in its block, which is its page's offset in the
/// block's IOVA range.
fn offset(addr: u64) -> usize {
    (addr % HUGE_SIZE) as usize
}

/// One block's IOVA range.
struct IovaBlock {
    state: bindings::dma_iova_state,
    /// Pages linked in it now.
    linked: u64,
}

/// The IOVA ranges of one DMA table, by block (address / 2 MiB).
///
/// # Invariants
///
/// Changed only under the DMA table's lock. Between its critical sections,
/// every block holds a live `HUGE_SIZE` range allocated for the table's
/// device, in which `linked` (at least 1) pages are linked: those of the
/// table's leaves in the block that carry [`LINKED`], each at its offset.
#[pin_data]
pub(super) struct IovaBlocks {
    #[pin]
    xa: XArray<KBox<IovaBlock>>,
}

impl IovaBlocks {
    /// No ranges.
    pub(super) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            xa <- XArray::new(AllocKind::Alloc),
        })
    }

    /// The range of `start`'s block, allocated now if it has none; `None`
    /// where there cannot be one (no IOMMU, `dma_iova=N`, no memory).
    fn range_of(&self, dev: *mut bindings::device, start: u64) -> Option<bindings::dma_iova_state> {
        let mut xa = self.xa.lock();
        if let Some(b) = xa.get(block(start)) {
            return Some(b.state);
        }
        let mut b = KBox::new(
            IovaBlock {
                state: bindings::dma_iova_state::default(),
                linked: 0,
            },
            GFP_NOWAIT,
        )
        .ok()?;
        // SAFETY: `dev` is a live device (the caller's promise); `b.state`
        // is ours to fill.
        if !unsafe { shim::hmm_rs_dma_iova_alloc(dev, &mut b.state, HUGE_SIZE as usize) } {
            stats::DMA_IOVA_REFUSED.add(1);
            return None;
        }
        let state = b.state;
        if let Err(e) = xa.store(block(start), b, GFP_NOWAIT) {
            let mut b = e.value;
            // SAFETY: Allocated just above for `dev`; nothing is linked.
            unsafe { shim::hmm_rs_dma_iova_free(dev, &mut b.state) };
            stats::DMA_IOVA_REFUSED.add(1);
            return None;
        }
        stats::DMA_IOVA_RANGES.add(1);
        Some(state)
    }

    /// Links `pages` (4 KiB each, for the pages from `start` on, within
    /// one block) into the block's range, bidirectional if `write`, syncs
    /// the IOTLB once, and pushes their leaves (with [`LINKED`]) into
    /// `buf`. Returns `Ok(false)`, with nothing linked and `pages` not
    /// taken from, where the block can have no range: the caller maps the
    /// pages one by one.
    ///
    /// Errors: `ENOMEM` or the DMA API's error if a link or the sync
    /// fails, or `buf` has no room; nothing of them is linked then.
    ///
    /// # Safety
    ///
    /// `dev` is the table's device, alive; the caller holds the table's
    /// lock, `[start, start + n pages)` has no leaves (so nothing linked),
    /// and `pages` are pages a fault found mapped.
    pub(super) unsafe fn link(
        &self,
        dev: *mut bindings::device,
        start: u64,
        pages: &mut impl Iterator<Item = ToMap>,
        write: bool,
        buf: &mut KVec<PtEntry>,
    ) -> Result<bool> {
        let Some(mut state) = self.range_of(dev, start) else {
            return Ok(false);
        };
        let first = offset(start);
        let w = if write { PtFlags::WRITE } else { PtFlags::NONE };
        // The run of physically contiguous pages not linked yet: its first
        // PFN and page count.
        let mut run: Option<(u64, usize)> = None;
        let mut linked = 0usize;
        let mut link_run = |state: &mut bindings::dma_iova_state, pfn: u64, n: usize| {
            let len = n * PAGE_SIZE as usize;
            // SAFETY: `state` is the block's live range for `dev` (type
            // invariant); the offsets from `first + linked` on are free
            // (the caller's promise) and within the block; the pages are
            // mapped (the caller's promise).
            let r = unsafe {
                shim::hmm_rs_dma_iova_link(dev, state, pfn as usize, first + linked, len, write)
            };
            if r == 0 {
                linked += len;
            }
            stats::DMA_IOVA_LINK_CALLS.add(1);
            r
        };
        let mut r = 0;
        for p in pages {
            let dma = state.addr + (first + buf.len() * PAGE_SIZE as usize) as u64;
            if buf
                .push_within_capacity(PtEntry::from_checked_pfn(
                    dma / PAGE_SIZE,
                    super::MAPPED | LINKED | w,
                ))
                .is_err()
            {
                r = ENOMEM.to_errno();
                break;
            }
            run = match run {
                Some((pfn, n)) if pfn + n as u64 == p.pfn => Some((pfn, n + 1)),
                Some((pfn, n)) => {
                    r = link_run(&mut state, pfn, n);
                    if r != 0 {
                        break;
                    }
                    Some((p.pfn, 1))
                }
                None => Some((p.pfn, 1)),
            };
        }
        if r == 0 {
            if let Some((pfn, n)) = run {
                r = link_run(&mut state, pfn, n);
            }
        }
        if r == 0 && linked > 0 {
            // SAFETY: `state` is the block's live range for `dev`, and
            // `[first, first + linked)` was just linked in it.
            r = unsafe { shim::hmm_rs_dma_iova_sync(dev, &mut state, first, linked) };
        }
        let pages = (linked / PAGE_SIZE as usize) as u64;
        let mut xa = self.xa.lock();
        let Some(b) = xa.get_mut(block(start)) else {
            // Found or stored by `range_of` under the table's lock, which
            // the caller still holds.
            pr_err!("hmm_rs: an IOVA range went away under the DMA table's lock\n");
            buf.clear();
            return Err(EIO);
        };
        // `dma_iova_link()` notes in the state whether it bounced a page
        // (swiotlb), which unlinking must know.
        b.state = state;
        if r == 0 {
            // INVARIANT: the pages just linked, at their offsets; a range
            // with none (no pages to link) goes.
            b.linked += pages;
            stats::DMA_IOVA_LINKS.add(pages);
            if b.linked == 0 {
                Self::free(&mut xa, dev, block(start));
            }
            return Ok(true);
        }
        stats::DMA_MAP_ERRORS.add(1);
        buf.clear();
        if linked > 0 {
            // SAFETY: Linked just above, with this direction.
            unsafe { shim::hmm_rs_dma_iova_unlink(dev, &mut b.state, first, linked, write) };
            stats::DMA_IOVA_UNLINKS.add(1);
        }
        if b.linked == 0 {
            Self::free(&mut xa, dev, block(start));
        }
        Err(Error::from_errno(r))
    }

    /// Unlinks a run of `n` pages from `addr` (one block, one direction,
    /// as [`Unlinks`] gathers them): one IOTLB flush. Frees the block's
    /// range with its last page.
    ///
    /// # Safety
    ///
    /// `dev` is the table's device, alive; the caller holds the table's
    /// lock and has just removed those pages' leaves, all [`LINKED`] with
    /// `write` as their `WRITE`.
    unsafe fn unlink(&self, dev: *mut bindings::device, addr: u64, n: u64, write: bool) {
        let mut xa = self.xa.lock();
        let Some(b) = xa.get_mut(block(addr)) else {
            pr_err!("hmm_rs: linked DMA leaves at {addr:#x} without an IOVA range\n");
            return;
        };
        let len = (n * PAGE_SIZE) as usize;
        // SAFETY: `b.state` is the block's live range for `dev` (type
        // invariant), in which those leaves' pages were linked with `write`
        // (the caller's promise).
        unsafe { shim::hmm_rs_dma_iova_unlink(dev, &mut b.state, offset(addr), len, write) };
        stats::DMA_IOVA_UNLINKS.add(1);
        b.linked = b.linked.saturating_sub(n);
        if b.linked == 0 {
            Self::free(&mut xa, dev, block(addr));
        }
    }

    /// Frees the range of `index`, with nothing linked in it.
    fn free(
        xa: &mut kernel::xarray::Guard<'_, KBox<IovaBlock>>,
        dev: *mut bindings::device,
        index: usize,
    ) {
        if let Some(mut b) = xa.remove(index) {
            // SAFETY: Allocated for `dev` (type invariant); nothing is
            // linked in it any more.
            unsafe { shim::hmm_rs_dma_iova_free(dev, &mut b.state) };
            stats::DMA_IOVA_RANGES.sub(1);
        }
    }
}

/// Linked leaves leaving a DMA table, gathered into runs (contiguous, in
/// one block, one direction), each unlinked with one call as the next
/// leaf does not extend it, and the last when this is dropped.
pub(super) struct Unlinks<'a> {
    blocks: &'a IovaBlocks,
    dev: *mut bindings::device,
    /// The run so far: first address, pages, direction.
    run: Option<(u64, u64, bool)>,
}

impl<'a> Unlinks<'a> {
    /// Runs of `blocks` for `dev`.
    ///
    /// # Safety
    ///
    /// `dev` is the table's device, alive; the caller holds the table's
    /// lock until this is dropped, and passes [`Self::add`] only leaves
    /// that are not (any more) in the table.
    pub(super) unsafe fn new(blocks: &'a IovaBlocks, dev: *mut bindings::device) -> Self {
        Self {
            blocks,
            dev,
            run: None,
        }
    }

    /// Adds a [`LINKED`] 4 KiB leaf that is not in the table.
    pub(super) fn add(&mut self, d: &PtDirty) {
        let write = d.entry.flags().contains(PtFlags::WRITE);
        if let Some((addr, n, w)) = &mut self.run {
            if *w == write && *addr + *n * PAGE_SIZE == d.addr && block(*addr) == block(d.addr) {
                *n += 1;
                return;
            }
        }
        self.flush();
        self.run = Some((d.addr, 1, write));
    }

    fn flush(&mut self) {
        if let Some((addr, n, write)) = self.run.take() {
            // SAFETY: `dev` and the lock as `new`'s caller promised; the
            // run's leaves have left the table, linked with `write`.
            unsafe { self.blocks.unlink(self.dev, addr, n, write) };
        }
    }
}

impl Drop for Unlinks<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
