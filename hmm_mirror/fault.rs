// SPDX-License-Identifier: GPL-2.0

//! Device faults: a fault reads its watch's sequence, faults its range in
//! with `hmm_range_fault` a 2 MiB chunk at a time, takes the table lock and
//! commits a chunk only if no invalidation of the range started since, else
//! faults the chunk in again.

use core::{cell::Cell, marker::PhantomData};
use kernel::{ffi::c_ulong, prelude::*, sync::atomic::Relaxed};

use super::{
    devmem::{DevMem, DevicePfns, Owner},
    dma::{DmaTable, ToMap},
    interval::{pfn_is_device_private, pfn_order, Interval, PfnBits, Seq, Want, Watches},
    HmmMirror,
};
use crate::{
    hmm_event::HmmEventType,
    hmm_pt::{huge_chunks, PtEntry, PtFlags, Reserve, HUGE_ORDER, HUGE_SIZE, PAGE_SIZE},
    stats, trace,
};

/// Retries of one fault chunk that keeps racing with invalidations before
/// the fault gives up with `EAGAIN`.
pub(super) const FAULT_RETRIES: u32 = 1000;

/// What one device fault did, for its trace.
#[derive(Default)]
struct FaultCounts {
    /// Chunks faulted in again because an invalidation raced.
    retries: u32,
    /// 2 MiB entries made.
    huge: u32,
}

/// A fault's buffers, one 2 MiB chunk's worth: `hmm_range_fault()`'s
/// output and the DMA entries being made.
pub(super) struct FaultBufs {
    pub(super) hmm_pfns: KVec<c_ulong>,
    pub(super) dma_buf: KVec<PtEntry>,
}

impl FaultBufs {
    /// Buffers for faults into `mirror`.
    pub(super) fn new(mirror: &HmmMirror) -> Result<Self> {
        let chunk_pages = HUGE_SIZE as usize / PAGE_SIZE as usize;
        Ok(Self {
            hmm_pfns: KVec::with_capacity(chunk_pages, GFP_KERNEL)?,
            dma_buf: KVec::with_capacity(
                if mirror.dma.is_some() { chunk_pages } else { 0 },
                GFP_KERNEL,
            )?,
        })
    }
}

/// One fault chunk's DMA commit ([`HmmMirror::commit_dma`]).
struct DmaCommit {
    start: u64,
    end: u64,
    /// One 2 MiB mapping of the huge page at `first`.
    huge: bool,
    first: u64,
    /// Bidirectional mappings.
    write: bool,
}

/// The [`Interval`] over the range of one device fault, whose sequence the
/// fault commits under: only invalidations that overlap the range make it
/// retry. One over all of user space (as `lib/test_hmm.c` has) would make
/// every fault retry whenever unrelated memory is unmapped.
///
/// # Invariants
///
/// The interval was inserted for a mirror that outlives `'a` and outlives
/// the watch (see [`FaultWatch::new`]).
pub(super) struct FaultWatch<'a>(Pin<KBox<Interval>>, PhantomData<&'a HmmMirror>);

impl<'a> FaultWatch<'a> {
    /// Watches `[start, end)` of `mirror`'s mm, a checked range. May sleep.
    ///
    /// # Safety
    ///
    /// The watch must be dropped, not leaked, before `mirror` is: a leaked
    /// watch stays in the mm's interval tree and its callback would reach
    /// a freed mirror.
    pub(super) unsafe fn new(mirror: &'a HmmMirror, start: u64, end: u64) -> Result<Self> {
        let w = KBox::pin_init(Interval::new(Watches::Fault), GFP_KERNEL)?;
        // SAFETY: The box is dropped with the watch, which the caller drops
        // before the mirror.
        unsafe { w.insert_range(mirror, start, end)? };
        // INVARIANT: inserted for `mirror`, which outlives `'a`.
        Ok(Self(w, PhantomData))
    }
}

/// Whether `pfn` is a device-private page; the `struct page` is looked at
/// only if `pfn` is within `dev`.
fn is_device_private(dev: DevicePfns, pfn: c_ulong) -> bool {
    dev.may_be_device(pfn as u64) && pfn_is_device_private(pfn)
}

/// A device fault maps device-private page `pfn`: its block of device
/// memory is recently used, for eviction (once per block: `last_block`).
/// Device-coherent pages look like system pages to a fault; telling them
/// apart would cost every page a look at its `struct page`, so their
/// recency is when they arrived.
///
/// # Safety
///
/// Called under the mirror's table lock with the page as the fault found
/// it, after the fault's sequence check: the CPU still maps it (an
/// invalidation would need that lock first), so it is referenced.
unsafe fn touch_device_page(pfn: u64, last_block: &Cell<u64>) {
    let block = pfn >> HUGE_ORDER;
    if last_block.replace(block) == block {
        return;
    }
    // SAFETY: Referenced, by the caller's guarantee.
    if let Some(mem) = unsafe { DevMem::of_pfn(pfn) } {
        mem.touch(pfn);
    }
}

impl HmmMirror {
    /// A device fault: mirrors `[start, end)` of the mm for reading
    /// (`DeviceReadFault`) or writing (`DeviceWriteFault`, entries are made
    /// `WRITE` and `DIRTY`, as the device is about to write), faulting CPU
    /// pages in as needed. May sleep.
    ///
    /// Errors: `EINVAL` for another event type or an empty, unaligned or
    /// wrapping range, or one beyond user space; `EFAULT` for unmapped or
    /// inaccessible memory; `EPERM` for a write to memory the CPU may only
    /// read; `ESRCH` once the mm is exiting; `EINTR` if the faulting task
    /// got a fatal signal; `ENOMEM`; `EAGAIN` if invalidations kept racing
    /// with the fault.
    pub(crate) fn fault(&self, ty: HmmEventType, start: u64, end: u64) -> Result {
        self.fault_then(ty, start, end, &mut |_, _| Ok(()))
    }

    /// [`Self::fault`], calling `then(chunk_start, chunk_end)` for each
    /// chunk (at most 2 MiB) right after it is committed, under the
    /// mirror's table lock: no invalidation can take the chunk's entries
    /// away before `then` returns, so the device may use them there (the
    /// way a driver programs its page table under its notifier lock). This
    /// is what makes progress under a steady stream of invalidations: an
    /// access done in `then` cannot be undone by one. `then` must not
    /// sleep; an error it returns ends the fault with that error.
    pub(crate) fn fault_then(
        &self,
        ty: HmmEventType,
        start: u64,
        end: u64,
        then: &mut dyn FnMut(u64, u64) -> Result,
    ) -> Result {
        let write = ty == HmmEventType::DeviceWriteFault;
        trace::fault_begin(self.id, ty, start, end);
        let mut counts = FaultCounts::default();
        let r = self
            .advise_fault(write, start, end)
            .and_then(|()| self.fault_untraced(ty, start, end, then, &mut counts));
        trace::fault_end(self.id, ty, start, end, &r, counts.retries, counts.huge);
        r
    }

    /// [`Self::fault`] without what advice adds (a migration to the
    /// preferred device): for a migration's own faults.
    pub(super) fn fault_unadvised(&self, ty: HmmEventType, start: u64, end: u64) -> Result {
        trace::fault_begin(self.id, ty, start, end);
        let mut counts = FaultCounts::default();
        let r = self.fault_untraced(ty, start, end, &mut |_, _| Ok(()), &mut counts);
        trace::fault_end(self.id, ty, start, end, &r, counts.retries, counts.huge);
        r
    }

    /// [`Self::fault_then`] without its trace.
    fn fault_untraced(
        &self,
        ty: HmmEventType,
        start: u64,
        end: u64,
        then: &mut dyn FnMut(u64, u64) -> Result,
        counts: &mut FaultCounts,
    ) -> Result {
        let write = match ty {
            HmmEventType::DeviceReadFault => false,
            HmmEventType::DeviceWriteFault => true,
            _ => return Err(EINVAL),
        };
        self.pt.check_range(start, end)?;
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        if self.dma.as_ref().is_some_and(|d| !d.is_bound()) {
            return Err(ENODEV);
        }
        let mut bufs = FaultBufs::new(self)?;
        // SAFETY: `watch` is a local, dropped before this returns.
        let watch = unsafe { FaultWatch::new(self, start, end)? };
        for (chunk, chunk_end) in huge_chunks(start, end) {
            self.fault_chunk(&watch, chunk, chunk_end, write, &mut bufs, then, counts)?;
        }
        self.hmm.count(ty);
        self.faults.add(1, Relaxed);
        stats::FAULTS.add(1);
        Ok(())
    }

    /// Faults one chunk (within one 2 MiB region) in and commits it,
    /// retrying while invalidations race with it.
    #[expect(clippy::too_many_arguments)]
    fn fault_chunk(
        &self,
        watch: &FaultWatch<'_>,
        start: u64,
        end: u64,
        write: bool,
        bufs: &mut FaultBufs,
        then: &mut dyn FnMut(u64, u64) -> Result,
        counts: &mut FaultCounts,
    ) -> Result {
        for tries in 0..FAULT_RETRIES {
            if tries > 0 {
                self.fault_retries.add(1, Relaxed);
                stats::FAULT_RETRIES.add(1);
                counts.retries += 1;
            }
            let seq = match self.fault_in(watch, start, end, write, &mut bufs.hmm_pfns) {
                Err(EBUSY) => continue,
                r => r?,
            };
            if let Some(huge) = self.commit(watch, start, end, write, seq, bufs, then)? {
                counts.huge += u32::from(huge);
                return Ok(());
            }
        }
        Err(EAGAIN)
    }

    /// First half of a fault: the CPU pages of `[start, end)`, faulted in,
    /// as hmm pfns, and the sequence they are valid for. `EBUSY`: an
    /// invalidation raced, fault in again.
    pub(super) fn fault_in(
        &self,
        watch: &FaultWatch<'_>,
        start: u64,
        end: u64,
        write: bool,
        hmm_pfns: &mut KVec<c_ulong>,
    ) -> Result<c_ulong> {
        let how = if write { Want::Write } else { Want::Read };
        let sub = Some(watch);
        let seq = match self.range_fault(sub, start, end, hmm_pfns, how, self.owner) {
            // 7.3 reports a write to read-only memory as EFAULT too.
            Err(EFAULT)
                if write
                    && self
                        .range_fault(sub, start, end, hmm_pfns, Want::Read, self.owner)
                        .is_ok() =>
            {
                return Err(EPERM)
            }
            r => r?,
        };
        let bits = PfnBits::get();
        let dev = DevicePfns::now();
        // Device pages of ours come as they are, read-only after a fork:
        // writing needs them back in system memory, where COW breaks.
        if write
            && hmm_pfns
                .iter()
                .any(|&p| !bits.writable(p) && is_device_private(dev, bits.pfn(p)))
        {
            return self.range_fault(sub, start, end, hmm_pfns, how, Owner::NONE);
        }
        Ok(seq)
    }

    /// Second half of a fault: mirrors the faulted-in `hmm_pfns` of
    /// `[start, end)` unless an invalidation started after `seq`, then calls
    /// `then` under the table lock. Returns whether it made a huge entry if
    /// it did; `None`: fault in again.
    #[expect(clippy::too_many_arguments)]
    pub(super) fn commit(
        &self,
        watch: &FaultWatch<'_>,
        start: u64,
        end: u64,
        write: bool,
        seq: c_ulong,
        bufs: &mut FaultBufs,
        then: &mut dyn FnMut(u64, u64) -> Result,
    ) -> Result<Option<bool>> {
        let (hmm_pfns, dma_buf) = (&bufs.hmm_pfns[..], &mut bufs.dma_buf);
        let flags = if write {
            PtFlags::WRITE | PtFlags::DIRTY
        } else {
            PtFlags::NONE
        };
        let bits = PfnBits::get();
        if hmm_pfns.iter().any(|&p| bits.error(p)) {
            return Err(EFAULT);
        }
        let order = pfn_order(hmm_pfns[0]);
        let first = bits.pfn(hmm_pfns[0]) as u64;
        let huge = hmm_pfns.len() == 1 << HUGE_ORDER
            && order >= HUGE_ORDER
            && first % (1 << HUGE_ORDER) == 0;
        let dev = DevicePfns::now();
        let last_block = Cell::new(u64::MAX);
        // hmm pfns have fewer bits than entries: every PFN fits. Only
        // called below, under the table lock after the sequence check.
        let entry = |&p: &c_ulong| {
            let pfn = bits.pfn(p);
            let flags = if is_device_private(dev, pfn) {
                // SAFETY: `entry` runs only under the table lock after the
                // sequence check (below), on the pages the fault found.
                unsafe { touch_device_page(pfn as u64, &last_block) };
                flags | PtFlags::DEVICE
            } else {
                flags
            };
            PtEntry::from_checked_pfn(pfn as u64, flags)
        };
        let mut res = self.pt.reserve(start, end, huge, GFP_KERNEL)?;
        let mut dma_res = match &self.dma {
            Some(dma) => Some(dma.reserve(start, end, huge)?),
            None => None,
        };
        let mut table = self.pt.lock();
        if watch.0.read_retry(seq) {
            return Ok(None);
        }
        // The device's mappings first: one that fails leaves the mirror as
        // it was.
        if let (Some(dma), Some(dma_res)) = (&self.dma, dma_res.as_mut()) {
            let what = DmaCommit {
                start,
                end,
                huge,
                first,
                write,
            };
            match self.commit_dma(dma, dma_res, &what, hmm_pfns, dma_buf) {
                Err(EAGAIN) => return Ok(None),
                r => r?,
            }
        }
        let done = if huge {
            table.populate_huge(&mut res, start, entry(&hmm_pfns[0]), |d| self.dirty(d))
        } else {
            let entries = hmm_pfns.iter().map(entry);
            table.populate_from(&mut res, start, entries, |d| self.dirty(d))
        };
        if done.is_err() {
            self.unmap_dma(start, end);
        }
        match done {
            Err(EAGAIN) => Ok(None),
            r => {
                r?;
                // Still under the lock: the chunk is as committed.
                then(start, end)?;
                drop(table);
                Ok(Some(huge))
            }
        }
    }

    /// The DMA half of [`Self::commit`], under the mirror's table lock:
    /// maps the faulted-in pages for the device. Device-private pages are
    /// the device's own: not mapped.
    fn commit_dma(
        &self,
        dma: &DmaTable,
        res: &mut Reserve,
        c: &DmaCommit,
        hmm_pfns: &[c_ulong],
        buf: &mut KVec<PtEntry>,
    ) -> Result {
        let bits = PfnBits::get();
        let dev = DevicePfns::now();
        let sys = |&p: &c_ulong| !is_device_private(dev, bits.pfn(p));
        let to_map = |&p: &c_ulong| ToMap {
            pfn: bits.pfn(p) as u64,
            order: 0,
        };
        if c.huge {
            return dma.commit_huge(res, c.start, c.first, c.write, buf);
        }
        if hmm_pfns.iter().all(sys) {
            return dma.commit_pages(res, c.start, hmm_pfns.iter().map(to_map), c.write, buf);
        }
        // Mixed: the runs of system pages.
        dma.remove(c.start, c.end);
        let mut i = 0;
        while i < hmm_pfns.len() {
            let run = hmm_pfns[i..].iter().take_while(|p| sys(p)).count();
            if run == 0 {
                i += 1;
                continue;
            }
            let a = c.start + i as u64 * PAGE_SIZE;
            let pages = hmm_pfns[i..i + run].iter().map(to_map);
            if let Err(e) = dma.commit_pages(res, a, pages, c.write, buf) {
                dma.remove(c.start, c.end);
                return Err(e);
            }
            i += run;
        }
        Ok(())
    }

    /// The walk [`Self::fault`] (`fault`) or [`Self::snapshot`] (not)
    /// builds on and nothing else: `hmm_range_fault()` of `[start, end)` in
    /// the same 2 MiB chunks, keeping nothing. The floor that the core's
    /// benchmark (`tests/core_bench.rs`) measures the core against.
    #[cfg(hmm_rs_bench)]
    pub(crate) fn bare_walk(&self, start: u64, end: u64, fault: bool) -> Result {
        self.pt.check_range(start, end)?;
        let mut hmm_pfns =
            KVec::with_capacity(HUGE_SIZE as usize / PAGE_SIZE as usize, GFP_KERNEL)?;
        let how = if fault { Want::Read } else { Want::Nothing };
        for (chunk, chunk_end) in huge_chunks(start, end) {
            loop {
                match self.range_fault(None, chunk, chunk_end, &mut hmm_pfns, how, self.owner) {
                    Err(EBUSY) => continue,
                    r => break r.map(|_| ())?,
                }
            }
        }
        Ok(())
    }

    /// `hmm_range_fault()` of `[start, end)` into `hmm_pfns`, which it sizes
    /// to one zeroed slot per page, under the sequence of `watch` (else of
    /// the mirror's interval notifier); returns the sequence to commit under.
    pub(super) fn range_fault(
        &self,
        watch: Option<&FaultWatch<'_>>,
        start: u64,
        end: u64,
        hmm_pfns: &mut KVec<c_ulong>,
        want: Want,
        owner: Owner,
    ) -> Result<Seq> {
        hmm_pfns.clear();
        hmm_pfns.resize(((end - start) / PAGE_SIZE) as usize, 0, GFP_KERNEL)?;
        let interval = watch.map_or(&self.interval, |w| &*w.0);
        interval.range_fault(start, end, hmm_pfns, want, owner)
    }
}
