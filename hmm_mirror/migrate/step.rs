// SPDX-License-Identifier: GPL-2.0

//! One migration step ([`Migration`]): the kernel's `migrate_vma_*` and
//! `migrate_device_*` calls through the shim, and the `MIGRATE_PFN_*`
//! arrays they fill, as safe Rust for the migration and eviction logic.
//!
//! C header: [`include/linux/migrate.h`](srctree/include/linux/migrate.h).

use core::ptr::NonNull;
use kernel::prelude::*;

use super::{HUGE_PAGES, MIGRATE_MAX};
use crate::{
    hmm_mirror::{
        devmem::{DevMem, SysPage},
        interval::MmReadLock,
    },
    hmm_pt::HUGE_ORDER,
    shim, stats,
};

/// The `MIGRATE_PFN_*` encoding of the kernel's src and dst arrays
/// (linux/migrate.h), from the shim.
#[derive(Clone, Copy)]
struct MigratePfn {
    valid: usize,
    migrate: usize,
    write: usize,
    compound: usize,
    shift: u32,
}

impl MigratePfn {
    pub(super) fn get() -> Self {
        // SAFETY: A constant array of the shim.
        let [valid, migrate, write, compound, shift] = unsafe { shim::hmm_rs_migrate_pfn_bits };
        Self {
            valid,
            migrate,
            write,
            compound,
            shift: shift as u32,
        }
    }
}

/// The monotonic clock in nanoseconds (`ktime_get_ns()`).
pub(crate) fn now_ns() -> u64 {
    // SAFETY: No preconditions.
    unsafe { shim::hmm_rs_now_ns() }
}

/// What page `i` of a step is. `huge`: it heads a huge folio (or a
/// PMD-sized hole) that moves whole, pages `i..i + 512`.
pub(crate) enum Source {
    /// It does not migrate (busy, pinned, another device's, ...).
    Stays,
    /// An address with no page yet (or the zero page): the device gets zeros.
    Empty { write: bool, huge: bool },
    /// The page (or huge folio) at `pfn`.
    Page { pfn: u64, write: bool, huge: bool },
}

/// The state of one migration step (`struct hmm_rs_migrate`).
///
/// # Invariants
///
/// `m` is allocated by `hmm_rs_migrate_alloc` and owned; `src` and `dst`
/// are its arrays of `MIGRATE_MAX` entries, which only the shim's calls
/// through `m` change; `npages` (at most `MIGRATE_MAX`) is the size of the
/// step set up last (0 before the first). `last_mem`, if set, is the
/// [`DevMem`] of a device page collected in the current step, which keeps
/// it alive until the step ends. `step` says whether a step is set up and
/// not finalized (its pages are locked, isolated and unmapped until then),
/// `moved` whether [`Self::pages`] ran for it.
pub(crate) struct Migration {
    m: NonNull<shim::Migrate>,
    src: NonNull<kernel::ffi::c_ulong>,
    dst: NonNull<kernel::ffi::c_ulong>,
    bits: MigratePfn,
    npages: usize,
    last_mem: Option<NonNull<DevMem>>,
    step: bool,
    moved: bool,
}

impl Migration {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: No preconditions.
        let m = NonNull::new(unsafe { shim::hmm_rs_migrate_alloc() }).ok_or(ENOMEM)?;
        // SAFETY: `m` is live; its arrays live as long as it does.
        let (src, dst) = unsafe {
            (
                shim::hmm_rs_migrate_src_pfns(m.as_ptr()),
                shim::hmm_rs_migrate_dst_pfns(m.as_ptr()),
            )
        };
        let (Some(src), Some(dst)) = (NonNull::new(src), NonNull::new(dst)) else {
            // SAFETY: Allocated just above, not used.
            unsafe { shim::hmm_rs_migrate_free(m.as_ptr()) };
            return Err(EINVAL);
        };
        Ok(Self {
            m,
            src,
            dst,
            bits: MigratePfn::get(),
            npages: 0,
            last_mem: None,
            step: false,
            moved: false,
        })
    }

    /// The src entries of the step.
    pub(super) fn src(&self) -> &[kernel::ffi::c_ulong] {
        // SAFETY: `src` has `MIGRATE_MAX >= npages` entries that only calls
        // through `&mut self` change (type invariant).
        unsafe { core::slice::from_raw_parts(self.src.as_ptr(), self.npages) }
    }

    /// The dst entries of the step.
    pub(super) fn dst(&self) -> &[kernel::ffi::c_ulong] {
        // SAFETY: As for `src`.
        unsafe { core::slice::from_raw_parts(self.dst.as_ptr(), self.npages) }
    }

    pub(super) fn dst_mut(&mut self) -> &mut [kernel::ffi::c_ulong] {
        // SAFETY: As for `src`; `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.dst.as_ptr(), self.npages) }
    }

    pub(super) fn set_up(&mut self, n: core::ffi::c_long) -> Result<usize> {
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        // INVARIANT: the shim sets up at most `MIGRATE_MAX` pages; a new
        // step has no device memory looked up yet.
        self.npages = (n as usize).min(MIGRATE_MAX);
        self.last_mem = None;
        self.step = true;
        self.moved = false;
        Ok(self.npages)
    }

    /// Collects what can move of `[addr, end)` of the locked mm, cut to one
    /// VMA, for system to device memory (`to_device`; `owner` names the
    /// invalidation) or back (device pages of `owner`). `EINVAL`: no
    /// readable VMA at `addr`.
    pub(super) fn setup_vma(
        &mut self,
        mm: &MmReadLock<'_>,
        addr: u64,
        end: u64,
        owner: *mut core::ffi::c_void,
        to_device: bool,
    ) -> Result<usize> {
        // SAFETY: `m` is ours; `mm` holds the notifier's mm and `mmap_lock`.
        let n = unsafe {
            shim::hmm_rs_migrate_setup(
                self.m.as_ptr(),
                mm.interval_sub(),
                addr as usize,
                end as usize,
                owner,
                to_device,
            )
        };
        self.set_up(n)
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
        let b = self.bits;
        let Some(&s) = self.src().get(i) else {
            return Source::Stays;
        };
        if s & b.migrate == 0 {
            return Source::Stays;
        }
        let (write, huge) = (s & b.write != 0, s & b.compound != 0);
        if s & b.valid == 0 {
            Source::Empty { write, huge }
        } else {
            Source::Page {
                pfn: (s >> b.shift) as u64,
                write,
                huge,
            }
        }
    }

    /// A new, locked system folio of `order` (0 or huge) for page `i` (not
    /// yet its destination): its PFN, or 0.
    pub(crate) fn alloc_system(&mut self, i: usize, order: u32) -> u64 {
        // SAFETY: `m` is ours (type invariant).
        unsafe { shim::hmm_rs_migrate_alloc_system(self.m.as_ptr(), i, order) as u64 }
    }

    /// Page `i` (`huge`: the huge folio it heads) goes to the locked page
    /// at `pfn`, which the step now owns.
    pub(crate) fn set_destination(&mut self, i: usize, pfn: u64, write: bool, huge: bool) {
        let b = self.bits;
        if let Some(d) = self.dst_mut().get_mut(i) {
            *d = (pfn as usize) << b.shift
                | b.valid
                | if write { b.write } else { 0 }
                | if huge { b.compound } else { 0 };
        }
    }

    /// For a step that collected device pages: copies each into new system
    /// memory and makes that its destination, and lists in `filled` each
    /// folio given one (its first index, pages). Stops at the first failure
    /// if `stop`, else leaves the pages that fail where they are.
    pub(crate) fn fill_all_from_device(
        &mut self,
        stop: bool,
        filled: &mut KVec<(usize, usize)>,
    ) -> Result {
        let mut pfns = KVec::with_capacity(HUGE_PAGES, GFP_KERNEL)?;
        filled.clear();
        let mut i = 0;
        while i < self.npages {
            let mut span = 1;
            if let Source::Page { pfn, write, huge } = self.source(i) {
                span = if huge { HUGE_PAGES } else { 1 };
                match self.fill_from_device(i, pfn, write, huge, &mut pfns) {
                    Ok(true) => filled.push((i, pfns.len()), GFP_KERNEL)?,
                    Ok(false) => {
                        for k in 0..pfns.len() {
                            filled.push((i + k, 1), GFP_KERNEL)?;
                        }
                    }
                    Err(e) if stop => return Err(e),
                    Err(_) => {}
                }
            }
            i += span;
        }
        Ok(())
    }

    /// Copies the device pages from `pfn` (a huge folio if `huge`, for pages
    /// `i..`) into new system memory and makes that their destination: a
    /// huge folio if one can be had, else single pages (the kernel splits
    /// the device folio). Puts the system PFN of each page, from `i`, in
    /// `out`; returns whether they are one huge folio.
    pub(crate) fn fill_from_device(
        &mut self,
        i: usize,
        pfn: u64,
        write: bool,
        huge: bool,
        out: &mut KVec<u64>,
    ) -> Result<bool> {
        out.clear();
        let mem = self.devmem_of(pfn).ok_or(EINVAL)?;
        let span = if huge {
            HUGE_PAGES.min(self.npages - i)
        } else {
            1
        };
        if huge && span == HUGE_PAGES {
            let dst = self.alloc_system(i, HUGE_ORDER);
            let counter = if dst != 0 {
                &stats::HUGE_BACK_WHOLE
            } else {
                &stats::HUGE_BACK_SPLIT
            };
            counter.add(1);
            if dst != 0 {
                if let Err(e) = mem.copy_out_huge(pfn, SysPage(dst)) {
                    // SAFETY: The folio allocated just above, unused.
                    unsafe { shim::hmm_rs_migrate_drop_page(dst as usize) };
                    return Err(e);
                }
                self.set_destination(i, dst, write, true);
                for k in 0..span as u64 {
                    out.push(dst + k, GFP_KERNEL)?;
                }
                return Ok(true);
            }
        }
        for k in 0..span {
            let dst = self.alloc_system(i + k, 0);
            if dst == 0 {
                return Err(ENOMEM);
            }
            if let Err(e) = mem.copy_out(pfn + k as u64, SysPage(dst)) {
                // SAFETY: The page allocated just above, unused.
                unsafe { shim::hmm_rs_migrate_drop_page(dst as usize) };
                return Err(e);
            }
            self.set_destination(i + k, dst, write, false);
            out.push(dst, GFP_KERNEL)?;
        }
        Ok(false)
    }

    /// The [`DevMem`] of `pfn`, a device page collected in this step: the
    /// last one looked up if `pfn` is in it (pages of a step are mostly of
    /// one device), which saves a look at the page's pagemap.
    pub(super) fn devmem_of<'a>(&mut self, pfn: u64) -> Option<&'a DevMem> {
        if let Some(last) = self.last_mem {
            // SAFETY: Alive until the step ends (type invariant), which
            // outlasts the caller's use: it copies before it ends the step.
            let mem = unsafe { last.as_ref() };
            if mem.index(pfn).is_some() {
                return Some(mem);
            }
        }
        // SAFETY: `pfn` is a collected (locked, referenced) device page.
        let mem = unsafe { DevMem::of_pfn(pfn) }?;
        // INVARIANT: the memory of a page collected in this step.
        self.last_mem = Some(NonNull::from(mem));
        Some(mem)
    }

    /// Moves the pages that have a destination.
    pub(crate) fn pages(&mut self) {
        // SAFETY: `m` is ours and set up.
        unsafe { shim::hmm_rs_migrate_pages(self.m.as_ptr()) };
        self.moved = true;
    }

    /// How many pages of the set-up step would move: those selected,
    /// a huge folio (or hole) counting its 512.
    pub(crate) fn pages_to_move(&self) -> usize {
        let mut need = 0;
        let mut i = 0;
        while i < self.npages {
            let span = match self.source(i) {
                Source::Stays => 1,
                Source::Empty { huge, .. } | Source::Page { huge, .. } => {
                    let span = if huge {
                        HUGE_PAGES.min(self.npages - i)
                    } else {
                        1
                    };
                    need += span;
                    span
                }
            };
            i += span;
        }
        need
    }

    /// Whether page `i` moved (after [`Self::pages`]).
    pub(crate) fn moved(&self, i: usize) -> bool {
        let b = self.bits;
        i < self.npages && self.src()[i] & b.migrate != 0 && self.dst()[i] != 0
    }

    /// Whether page `i` was a candidate that did not move (busy), after
    /// [`Self::pages`].
    pub(crate) fn busy(&self, i: usize) -> bool {
        i < self.npages && self.src()[i] & self.bits.valid != 0 && !self.moved(i)
    }

    /// How many pages of a set-up step the kernel left out (not selected at
    /// all) although they could move (to the device: anonymous pages the
    /// CPU maps; back: pages of `owner`'s device memory): a lock or
    /// reference held elsewhere just then (compaction, khugepaged, another
    /// CPU's LRU batch), which another try may find gone. [`Self::busy`]
    /// counts only pages that were selected.
    pub(super) fn dropped(
        &mut self,
        mm: &MmReadLock<'_>,
        owner: *mut core::ffi::c_void,
        to_device: bool,
    ) -> usize {
        // SAFETY: `m` is ours and set up; `mm` holds the notifier's mm and
        // `mmap_lock`; `owner` is only compared.
        let n = unsafe {
            shim::hmm_rs_migrate_dropped(self.m.as_ptr(), mm.interval_sub(), owner, to_device)
        };
        n.max(0) as usize
    }

    /// Ends the step.
    pub(crate) fn finalize(&mut self) {
        // SAFETY: `m` is ours and set up.
        unsafe { shim::hmm_rs_migrate_finalize(self.m.as_ptr()) };
        self.npages = 0;
        self.last_mem = None;
        self.step = false;
    }

    /// Ends a step that failed half way (an allocation, a mirror update):
    /// nothing more moves, every page is mapped back where it was, and the
    /// destination pages given so far are released. A step left set up
    /// would keep its pages locked and unmapped for good: a CPU access to
    /// them would wait forever, and device memory could never go.
    pub(super) fn abort(&mut self) {
        if !self.moved {
            let migrate = self.bits.migrate as kernel::ffi::c_ulong;
            // SAFETY: As for `src`; `&mut self` makes this the only access.
            let src = unsafe { core::slice::from_raw_parts_mut(self.src.as_ptr(), self.npages) };
            for s in src {
                *s &= !migrate;
            }
            self.pages();
        }
        self.finalize();
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        if self.step {
            self.abort();
        }
        // SAFETY: Allocated by `hmm_rs_migrate_alloc` (type invariant).
        unsafe { shim::hmm_rs_migrate_free(self.m.as_ptr()) };
    }
}
