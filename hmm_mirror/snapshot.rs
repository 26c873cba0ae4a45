// SPDX-License-Identifier: GPL-2.0

//! What the CPU maps, without faulting ([`HmmMirror::snapshot`]), and
//! exclusive device access ([`HmmMirror::make_exclusive`]).

use kernel::{prelude::*, sync::atomic::Relaxed};

use super::{
    devmem::DevicePfns,
    fault::FAULT_RETRIES,
    interval::{fatal_signal_pending, Want},
    HmmMirror,
};
use crate::{
    hmm_pt::{huge_chunks, PtEntry, PtFlags, HUGE_SIZE, PAGE_SIZE},
    shim, trace,
};

/// What the CPU maps at a page, for [`HmmMirror::snapshot`] (hmm_rs.h's
/// `HMM_RS_SNAP_*`, which the shim's `hmm_rs_snap_decode()` writes): for
/// Rust callers, which today are the KUnit tests only.
#[cfg_attr(not(CONFIG_KUNIT), expect(dead_code))]
pub(crate) mod snap {
    /// The CPU maps the page.
    pub(crate) const VALID: u32 = 1 << 0;
    /// ... writable.
    pub(crate) const WRITE: u32 = 1 << 1;
    /// No VMA there, or one the CPU may not read.
    pub(crate) const ERROR: u32 = 1 << 2;
    /// The shared zero page.
    pub(crate) const ZERO: u32 = 1 << 3;
    /// A device page: device-private, or device-coherent with `COHERENT`.
    pub(crate) const DEVICE: u32 = 1 << 4;
    /// ... device-coherent (the CPU addresses it).
    pub(crate) const COHERENT: u32 = 1 << 5;
    /// ... of another device than the mirror's.
    pub(crate) const REMOTE: u32 = 1 << 6;
    /// The CPU maps it with a page of `1 << (v >> ORDER_SHIFT)` pages.
    pub(crate) const ORDER_SHIFT: u32 = 8;
}

impl HmmMirror {
    /// What the CPU maps in `[start, end)` now, without faulting anything
    /// in: one [`snap`] value per page into `out`, which must have room for
    /// exactly that many. Does not change the mirror. May sleep.
    ///
    /// Errors: `EINVAL` for a bad range or `out` of the wrong length;
    /// `ESRCH` once the mm is exiting; `ENOMEM`; `EAGAIN` if invalidations
    /// kept racing with it.
    pub(crate) fn snapshot(&self, start: u64, end: u64, out: &mut [u32]) -> Result {
        let r = self.snapshot_untraced(start, end, out);
        trace::snapshot(self.id, start, end, &r);
        r
    }

    /// [`Self::snapshot`] without its trace.
    fn snapshot_untraced(&self, start: u64, end: u64, out: &mut [u32]) -> Result {
        self.pt.check_range(start, end)?;
        if out.len() as u64 != (end - start) / PAGE_SIZE {
            return Err(EINVAL);
        }
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        let mut hmm_pfns =
            KVec::with_capacity(HUGE_SIZE as usize / PAGE_SIZE as usize, GFP_KERNEL)?;
        let dev = DevicePfns::now();
        let mut done = 0;
        for (chunk, chunk_end) in huge_chunks(start, end) {
            let mut tries = 0;
            loop {
                match self.range_fault(
                    None,
                    chunk,
                    chunk_end,
                    &mut hmm_pfns,
                    Want::Nothing,
                    self.owner,
                ) {
                    Err(EBUSY) if tries < FAULT_RETRIES => tries += 1,
                    Err(EBUSY) => return Err(EAGAIN),
                    r => break r.map(|_| ())?,
                }
            }
            let dst = &mut out[done..done + hmm_pfns.len()];
            // SAFETY: `dst` has room for one value per hmm pfn.
            unsafe {
                shim::hmm_rs_snap_decode(
                    hmm_pfns.as_ptr(),
                    dst.as_mut_ptr(),
                    dst.len(),
                    self.owner.as_ptr(),
                    dev.lo as usize,
                    dev.hi as usize,
                )
            };
            done += dst.len();
        }
        Ok(())
    }

    /// Gives the device exclusive access to `[start, end)` (private anonymous
    /// writable memory): the CPU must fault to touch those pages again,
    /// which takes the access back with an `EXCLUSIVE` invalidation that
    /// removes the entries. Entries get `EXCLUSIVE`, `WRITE` and `DIRTY`
    /// (device-exclusive pages look clean to the CPU). May sleep.
    ///
    /// Errors: `EINVAL` for a bad range; what `make_device_exclusive`
    /// returns (`EFAULT`, `EBUSY`...) for memory that cannot be made
    /// exclusive; `ESRCH` once the mm is exiting; `ENOMEM`.
    pub(crate) fn make_exclusive(&self, start: u64, end: u64) -> Result {
        let r = self.make_exclusive_untraced(start, end);
        trace::exclusive(self.id, start, end, &r);
        r
    }

    /// [`Self::make_exclusive`] without its trace.
    fn make_exclusive_untraced(&self, start: u64, end: u64) -> Result {
        self.pt.check_range(start, end)?;
        // Exclusive access is for writing (it breaks COW): not where the
        // device only reads.
        if !self.may_write(start, end) {
            return Err(EPERM);
        }
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        let mm = self.interval.lock_mm()?;
        let owner = core::ptr::from_ref(self).cast_mut().cast();
        let mut addr = start;
        while addr < end {
            // A page at a time over what may be a large VMA: a kill ends it.
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            // The folio stays locked until `page` drops: the CPU cannot take
            // the access back before the entry is in the table.
            let page = mm.make_exclusive(addr, owner)?;
            self.map_exclusive(addr, page.pfn())?;
            drop(page);
            addr += PAGE_SIZE;
        }
        Ok(())
    }

    fn map_exclusive(&self, addr: u64, pfn: u64) -> Result {
        let entry = PtEntry::new(pfn, PtFlags::EXCLUSIVE | PtFlags::WRITE | PtFlags::DIRTY)?;
        loop {
            let mut res = self.pt.reserve(addr, addr + PAGE_SIZE, false, GFP_KERNEL)?;
            match self
                .pt
                .lock()
                .populate(&mut res, addr, &[entry], |d| self.dirty(d))
            {
                Err(EAGAIN) => continue,
                r => return r,
            }
        }
    }
}
