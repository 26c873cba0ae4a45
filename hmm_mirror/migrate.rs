// SPDX-License-Identifier: GPL-2.0

//! Migration between system memory and device memory ([`DevMem`]).
//!
//! Each step covers at most 512 pages of one VMA (`migrate_vma_*`), or of a
//! device's PFN range for eviction (`migrate_device_*`): the kernel collects
//! and unmaps the pages (an `MMU_NOTIFY_MIGRATE` invalidation, which reaches
//! every mirror as a `Migrate` event and removes their entries), the device
//! copies, and the kernel moves the CPU mappings.
//!
//! A migration to device memory names its mirror as the invalidation's
//! owner, and the core's notifier leaves that one mirror alone (as
//! test_hmm does): pages that stay, such as those already on the device,
//! keep their entries; for pages that moved, the mirror replaces the old
//! entries with the device pages, or removes them if an invalidation raced
//! (a later fault finds the device pages).

use core::ptr::NonNull;
use kernel::{bindings, prelude::*};

use super::devmem::{DevMem, SysPage};
use super::HmmMirror;
use crate::{
    hmm_pt::{PtEntry, PtFlags, PAGE_SIZE},
    shim,
};

/// Pages per migration step (`HMM_RS_MIGRATE_MAX` of hmm_shim.h).
const MIGRATE_MAX: usize = 512;

/// What page `i` of a step is.
pub(crate) enum Source {
    /// It does not migrate (busy, pinned, another device's, ...).
    Stays,
    /// An address with no page yet (or the zero page): the device gets zeros.
    Empty { write: bool },
    /// The page at `pfn`.
    Page { pfn: u64, write: bool },
}

/// The state of one migration step (`struct hmm_rs_migrate`).
///
/// # Invariants
///
/// `m` is allocated by `hmm_rs_migrate_alloc` and owned; `npages` is the
/// size of the step set up last (0 before the first).
pub(crate) struct Migration {
    m: NonNull<shim::Migrate>,
    npages: usize,
}

impl Migration {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let m = NonNull::new(unsafe { shim::hmm_rs_migrate_alloc() }).ok_or(ENOMEM)?;
        Ok(Self { m, npages: 0 })
    }

    fn set_up(&mut self, n: core::ffi::c_long) -> Result<usize> {
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        self.npages = n as usize;
        Ok(self.npages)
    }

    /// Collects the device pages `[pfn, pfn + npages)` (at most 512).
    pub(crate) fn setup_device(&mut self, pfn: u64, npages: usize) -> Result<usize> {
        // SAFETY: `m` is ours (type invariant); any PFN range may be passed.
        let n = unsafe { shim::hmm_rs_migrate_setup_device(self.m.as_ptr(), pfn as usize, npages) };
        self.set_up(n)
    }

    /// Collects the device page a CPU fault hit.
    ///
    /// # Safety
    ///
    /// `vmf` is a `migrate_to_ram` fault on a device page.
    pub(crate) unsafe fn setup_fault(&mut self, vmf: *mut core::ffi::c_void) -> Result<usize> {
        // SAFETY: By the caller's guarantee.
        let n = unsafe { shim::hmm_rs_migrate_setup_fault(self.m.as_ptr(), vmf) };
        self.set_up(n)
    }

    /// Page `i`'s source.
    pub(crate) fn source(&self, i: usize) -> Source {
        if i >= self.npages {
            return Source::Stays;
        }
        let mut write = false;
        // SAFETY: `m` is ours and set up for more than `i` pages.
        match unsafe { shim::hmm_rs_migrate_src(self.m.as_ptr(), i, &mut write) } {
            p if p < 0 => Source::Stays,
            0 => Source::Empty { write },
            p => Source::Page {
                pfn: p as u64,
                write,
            },
        }
    }

    /// A new system page for page `i` (not yet its destination): its PFN,
    /// or 0.
    pub(crate) fn alloc_system(&mut self, i: usize) -> u64 {
        // SAFETY: `m` is ours (type invariant).
        unsafe { shim::hmm_rs_migrate_alloc_system(self.m.as_ptr(), i) as u64 }
    }

    /// Page `i` goes to the page at `pfn`, which the step now owns.
    pub(crate) fn set_destination(&mut self, i: usize, pfn: u64, write: bool) {
        if i < self.npages {
            // SAFETY: `m` is ours; `pfn` is a page the caller owns and hands over.
            unsafe { shim::hmm_rs_migrate_set_dst(self.m.as_ptr(), i, pfn as usize, write) };
        }
    }

    /// Moves the pages that have a destination.
    pub(crate) fn pages(&mut self) {
        // SAFETY: `m` is ours and set up.
        unsafe { shim::hmm_rs_migrate_pages(self.m.as_ptr()) };
    }

    /// Whether page `i` moved (after [`Self::pages`]).
    pub(crate) fn moved(&self, i: usize) -> bool {
        // SAFETY: `m` is ours.
        i < self.npages && unsafe { shim::hmm_rs_migrate_done(self.m.as_ptr(), i) }
    }

    /// Ends the step.
    pub(crate) fn finalize(&mut self) {
        // SAFETY: `m` is ours and set up.
        unsafe { shim::hmm_rs_migrate_finalize(self.m.as_ptr()) };
        self.npages = 0;
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        // SAFETY: Allocated by `hmm_rs_migrate_alloc` (type invariant).
        unsafe { shim::hmm_rs_migrate_free(self.m.as_ptr()) };
    }
}

/// The mirrored mm with its `mmap_lock` held for reading.
struct MmReadLock(*mut bindings::mmu_interval_notifier);

impl MmReadLock {
    fn new(sub: *mut bindings::mmu_interval_notifier) -> Result<Self> {
        // SAFETY: The caller passes its mirror's inserted notifier.
        kernel::error::to_result(unsafe { shim::hmm_rs_mm_lock(sub) })?;
        Ok(Self(sub))
    }
}

impl Drop for MmReadLock {
    fn drop(&mut self) {
        // SAFETY: Paired with `hmm_rs_mm_lock` in `new`.
        unsafe { shim::hmm_rs_mm_unlock(self.0) };
    }
}

impl HmmMirror {
    /// Whether `owner`, an invalidation's, marks this mirror's own
    /// migration to device memory.
    pub(crate) fn is_migration_owner(&self, owner: *mut core::ffi::c_void) -> bool {
        core::ptr::eq(owner.cast_const(), core::ptr::from_ref(self).cast())
    }

    /// Migrates what can be of `[start, end)` to `mem`, which must belong to
    /// this mirror's device, and mirrors the device pages. Pages that cannot
    /// move (shared, pinned, on another device...) stay; so do pages once
    /// `mem` is full. Returns how many pages moved. May sleep.
    ///
    /// Errors: `EINVAL` for a bad range, memory of another device, or a
    /// range not covered by readable VMAs; `ESRCH` once the mm is exiting;
    /// `ENOMEM`.
    pub(crate) fn migrate_to_device(&self, mem: &DevMem, start: u64, end: u64) -> Result<usize> {
        if mem.owner() != self.owner {
            return Err(EINVAL);
        }
        self.migrate(start, end, Some(mem))
    }

    /// Migrates this device's pages in `[start, end)` back to system
    /// memory. Returns how many pages moved. May sleep. Errors as for
    /// [`Self::migrate_to_device`].
    pub(crate) fn migrate_to_system(&self, start: u64, end: u64) -> Result<usize> {
        self.migrate(start, end, None)
    }

    fn migrate(&self, start: u64, end: u64, to: Option<&DevMem>) -> Result<usize> {
        self.pt.check_range(start, end)?;
        if self.released.load(kernel::sync::atomic::Relaxed) {
            return Err(ESRCH);
        }
        let sub = self.interval.get();
        let mut m = Migration::new()?;
        let mut dsts = KVec::with_capacity(MIGRATE_MAX, GFP_KERNEL)?;
        let mut moved = 0;
        let _mm = MmReadLock::new(sub)?;
        let mut addr = start;
        while addr < end {
            let step_end = end.min(addr + (MIGRATE_MAX as u64) * PAGE_SIZE);
            // SAFETY: `m` is ours; we hold the mm's `mmap_lock`.
            let n = unsafe {
                shim::hmm_rs_migrate_setup(
                    m.m.as_ptr(),
                    sub,
                    addr as usize,
                    step_end as usize,
                    // To the device: this mirror (see the module
                    // documentation); back: pages of the mirror's device.
                    if to.is_some() {
                        core::ptr::from_ref(self).cast_mut().cast()
                    } else {
                        self.owner.as_ptr()
                    },
                    to.is_some(),
                )
            };
            let n = m.set_up(n)?;
            dsts.clear();
            dsts.resize(n, (0, false), GFP_KERNEL)?;
            for i in 0..n {
                let (src, write) = match m.source(i) {
                    Source::Stays => continue,
                    Source::Empty { write } => (None, write),
                    Source::Page { pfn, write } => (Some(pfn), write),
                };
                let dst = match (to, src) {
                    (Some(mem), src) => mem.fill_page(src.map(SysPage)),
                    (None, Some(pfn)) => self.fill_system(&mut m, i, pfn),
                    (None, None) => None,
                };
                if let Some(dst) = dst {
                    m.set_destination(i, dst, write);
                    dsts[i] = (dst, write);
                }
            }
            m.pages();
            if to.is_some() {
                for (i, d) in dsts.iter_mut().enumerate() {
                    if !m.moved(i) {
                        d.0 = 0;
                    }
                }
                if let Err(e) = self.map_moved(&dsts, addr) {
                    m.finalize();
                    return Err(e);
                }
            }
            moved += (0..n).filter(|&i| m.moved(i)).count();
            m.finalize();
            addr += n as u64 * PAGE_SIZE;
        }
        Ok(moved)
    }

    /// A system page holding a copy of device page `pfn`, for page `i`.
    fn fill_system(&self, m: &mut Migration, i: usize, pfn: u64) -> Option<u64> {
        // SAFETY: `pfn` is a collected (locked, referenced) device page.
        let mem = unsafe { DevMem::of_pfn(pfn) }?;
        let dst = m.alloc_system(i);
        if dst == 0 {
            return None;
        }
        if mem.copy_out(pfn, SysPage(dst)).is_err() {
            // SAFETY: The page allocated just above, unused.
            unsafe { shim::hmm_rs_migrate_drop_page(dst as usize) };
            return None;
        }
        Some(dst)
    }

    /// Mirrors the device pages the step moved to, or, if an invalidation
    /// started since the kernel moved them, removes the entries of the
    /// pages that moved (a later fault finds the device pages).
    /// `moved` holds, per page from `start`, the device PFN it moved to (or
    /// 0) and whether it is writable.
    fn map_moved(&self, moved: &[(u64, bool)], start: u64) -> Result {
        let sub = self.interval.get();
        // SAFETY: `interval` is inserted (type invariant of `HmmMirror`).
        let seq = unsafe { shim::hmm_rs_interval_read_begin(sub) };
        let end = start + moved.len() as u64 * PAGE_SIZE;
        loop {
            let mut res = self.pt.reserve(start, end, false, GFP_KERNEL)?;
            let mut table = self.pt.lock();
            // SAFETY: As above.
            let raced = unsafe { shim::hmm_rs_interval_read_retry(sub, seq) };
            let mut done = Ok(());
            for (i, &(pfn, write)) in moved.iter().enumerate() {
                if pfn == 0 || done.is_err() {
                    continue;
                }
                let addr = start + i as u64 * PAGE_SIZE;
                done = if raced {
                    table
                        .update(addr, addr + PAGE_SIZE, PtFlags::NONE, |d| self.dirty(d))
                        .map(|_| ())
                } else {
                    let w = if write { PtFlags::WRITE } else { PtFlags::NONE };
                    let e = PtEntry::new(pfn, PtFlags::DEVICE | w)?;
                    table.populate(&mut res, addr, &[e], |d| self.dirty(d))
                };
            }
            match done {
                // Directories ran short (a racing fault took some): again.
                Err(EAGAIN) => continue,
                r => return r,
            }
        }
    }
}
