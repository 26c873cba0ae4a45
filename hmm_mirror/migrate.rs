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
//! entries with the device pages, or, if an invalidation raced, removes
//! them and faults the device pages in afresh once the step is done.

use core::ptr::NonNull;
use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use super::devmem::{DevMem, SysPage};
use super::{interval::MmReadLock, HmmMirror};
use crate::{
    hmm_event::HmmEventType,
    hmm_pt::{PtEntry, PtFlags, HUGE_ORDER, HUGE_SIZE, PAGE_SIZE},
    shim,
    trace::{self, MigrateCounts},
};

/// Migration steps to device memory that raced with an invalidation, steps
/// tried again because pages were busy, pages the kernel left out of a step
/// although they could move (see [`Migration::dropped`]), the time slept
/// before those tries, and pages that were there to move but stayed after
/// the last try (debugfs).
pub(crate) static RACED: Atomic<u64> = Atomic::new(0);
pub(crate) static BUSY_RETRIES: Atomic<u64> = Atomic::new(0);
pub(crate) static DROPPED: Atomic<u64> = Atomic::new(0);
pub(crate) static BACKOFF_NS: Atomic<u64> = Atomic::new(0);
pub(crate) static STAYED: Atomic<u64> = Atomic::new(0);
/// Huge device folios brought back to system memory as one huge folio, and
/// as 512 pages because no huge folio could be had (debugfs).
pub(crate) static HUGE_BACK_WHOLE: Atomic<u64> = Atomic::new(0);
pub(crate) static HUGE_BACK_SPLIT: Atomic<u64> = Atomic::new(0);

/// Extra tries, a millisecond apart, of a step in which pages were busy.
const BUSY_TRIES: u32 = 10;

/// Pages per migration step (`HMM_RS_MIGRATE_MAX` of hmm_shim.h).
const MIGRATE_MAX: usize = 512;
/// Pages of a huge folio.
pub(crate) const HUGE_PAGES: usize = 1 << HUGE_ORDER;

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
    fn get() -> Self {
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

/// Where page `i` of a step goes: `pfn` (0: nowhere), whether writable, and
/// the index whose migration decides whether it moved (a huge folio's head).
#[derive(Clone, Copy)]
struct Planned {
    pfn: u64,
    write: bool,
    head: usize,
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
    fn src(&self) -> &[kernel::ffi::c_ulong] {
        // SAFETY: `src` has `MIGRATE_MAX >= npages` entries that only calls
        // through `&mut self` change (type invariant).
        unsafe { core::slice::from_raw_parts(self.src.as_ptr(), self.npages) }
    }

    /// The dst entries of the step.
    fn dst(&self) -> &[kernel::ffi::c_ulong] {
        // SAFETY: As for `src`.
        unsafe { core::slice::from_raw_parts(self.dst.as_ptr(), self.npages) }
    }

    fn dst_mut(&mut self) -> &mut [kernel::ffi::c_ulong] {
        // SAFETY: As for `src`; `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.dst.as_ptr(), self.npages) }
    }

    fn set_up(&mut self, n: core::ffi::c_long) -> Result<usize> {
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
    fn setup_vma(
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
                mm.sub(),
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
                &HUGE_BACK_WHOLE
            } else {
                &HUGE_BACK_SPLIT
            };
            counter.add(1, Relaxed);
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
    fn devmem_of<'a>(&mut self, pfn: u64) -> Option<&'a DevMem> {
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
    fn dropped(
        &mut self,
        mm: &MmReadLock<'_>,
        owner: *mut core::ffi::c_void,
        to_device: bool,
    ) -> usize {
        // SAFETY: `m` is ours and set up; `mm` holds the notifier's mm and
        // `mmap_lock`; `owner` is only compared.
        let n =
            unsafe { shim::hmm_rs_migrate_dropped(self.m.as_ptr(), mm.sub(), owner, to_device) };
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
    fn abort(&mut self) {
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
    /// `EINTR` if the task is being killed (between steps); `ENOMEM`.
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
        let mut counts = MigrateCounts::default();
        let r = self.migrate_counted(start, end, to, &mut counts);
        trace::migrate(self.id, to.is_some(), start, end, &r, &counts);
        r
    }

    fn migrate_counted(
        &self,
        start: u64,
        end: u64,
        to: Option<&DevMem>,
        counts: &mut MigrateCounts,
    ) -> Result<usize> {
        self.pt.check_range(start, end)?;
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        let mut plan = KVec::with_capacity(MIGRATE_MAX, GFP_KERNEL)?;
        let mut filled = KVec::with_capacity(HUGE_PAGES, GFP_KERNEL)?;
        let mut moved = 0;
        let mut refault = KVec::<(u64, u64)>::new();
        // Before `m`, so dropped after it: a step an error leaves set up
        // is ended (`Migration`'s drop) with `mmap_lock` still held.
        let mm = self.interval.lock_mm()?;
        let mut m = Migration::new()?;
        let mut addr = start;
        let mut tries = 0;
        while addr < end {
            // A task being killed stops between steps (what moved stays
            // moved), so that its exit does not wait for a long migration.
            // SAFETY: No preconditions.
            if unsafe { shim::hmm_rs_fatal_signal_pending() } {
                return Err(EINTR);
            }
            // Steps end on 2 MiB boundaries so that huge pages move whole.
            let step_end = end.min((addr | (HUGE_SIZE - 1)) + 1);
            // To the device the invalidation names this mirror (see the
            // module documentation); back, it selects the device's pages.
            let owner = if to.is_some() {
                core::ptr::from_ref(self).cast_mut().cast()
            } else {
                self.owner.as_ptr()
            };
            let n = m.setup_vma(&mm, addr, step_end, owner, to.is_some())?;
            counts.steps += 1;
            let none = Planned {
                pfn: 0,
                write: false,
                head: 0,
            };
            plan.clear();
            plan.resize(n, none, GFP_KERNEL)?;
            let mut i = 0;
            while i < n {
                let (src, write, huge) = match m.source(i) {
                    Source::Stays => {
                        i += 1;
                        continue;
                    }
                    Source::Empty { write, huge } => (None, write, huge),
                    Source::Page { pfn, write, huge } => (Some(pfn), write, huge),
                };
                let span = if huge { HUGE_PAGES.min(n - i) } else { 1 };
                filled.clear();
                let mut one_folio = false;
                match (to, src) {
                    (Some(mem), src) => {
                        if let Some(dst) = huge.then(|| mem.fill_huge(src)).flatten() {
                            m.set_destination(i, dst, write, true);
                            one_folio = true;
                            for k in 0..span as u64 {
                                filled.push(dst + k, GFP_KERNEL)?;
                            }
                        } else {
                            // Page by page (the kernel splits a huge source).
                            for k in 0..span {
                                let dst = mem.fill_page(src.map(|p| p + k as u64));
                                if let Some(dst) = dst {
                                    m.set_destination(i + k, dst, write, false);
                                } else {
                                    super::devmem::NOT_PLACED.add(1, Relaxed);
                                    counts.not_placed += 1;
                                }
                                filled.push(dst.unwrap_or(0), GFP_KERNEL)?;
                            }
                        }
                    }
                    // A page that cannot be copied stays on the device.
                    (None, Some(pfn)) => {
                        one_folio = m
                            .fill_from_device(i, pfn, write, huge, &mut filled)
                            .unwrap_or(false);
                    }
                    (None, None) => {}
                }
                for (k, &pfn) in filled.iter().enumerate() {
                    let head = if one_folio { i } else { i + k };
                    plan[i + k] = Planned { pfn, write, head };
                }
                i += span;
            }
            m.pages();
            for p in plan.iter_mut() {
                if p.pfn != 0 && !m.moved(p.head) {
                    p.pfn = 0;
                }
            }
            if to.is_some() {
                let private = to.is_some_and(|m| !m.is_coherent());
                match self.map_moved(&plan, addr, private) {
                    Ok(false) => {}
                    Ok(true) => {
                        RACED.add(1, Relaxed);
                        for (i, p) in plan.iter().enumerate() {
                            if p.pfn != 0 {
                                let a = addr + i as u64 * PAGE_SIZE;
                                match refault.last_mut() {
                                    Some((_, e)) if *e == a => *e = a + PAGE_SIZE,
                                    _ => refault.push((a, a + PAGE_SIZE), GFP_KERNEL)?,
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // The pages that moved are freed by finalize, and
                        // this mirror skipped their Migrate event: their
                        // old entries must go first, or they would name
                        // freed pages (found by the injected storm: freed
                        // pages dirtied through such entries).
                        let step_end = addr + n as u64 * PAGE_SIZE;
                        // In the table's range (checked): cannot fail.
                        let _ = self
                            .pt
                            .lock()
                            .update(addr, step_end, PtFlags::NONE, |d| self.dirty(d));
                        m.finalize();
                        return Err(e);
                    }
                }
            }
            moved += plan.iter().filter(|p| p.pfn != 0).count();
            counts.moved = moved;
            let mut busy = (0..n).filter(|&i| m.busy(i)).count();
            if tries < BUSY_TRIES {
                let dropped = m.dropped(&mm, self.owner.as_ptr(), to.is_some());
                DROPPED.add(dropped as u64, Relaxed);
                busy += dropped;
            }
            m.finalize();
            // Pages the kernel could not isolate or move just now (an
            // extra reference, the lock taken) get another chance; what
            // moved is not selected again.
            if busy != 0 && tries < BUSY_TRIES {
                tries += 1;
                BUSY_RETRIES.add(1, Relaxed);
                // SAFETY: No preconditions.
                BACKOFF_NS.add(unsafe { shim::hmm_rs_migrate_backoff() }, Relaxed);
                continue;
            }
            STAYED.add(busy as u64, Relaxed);
            counts.stayed += busy;
            tries = 0;
            addr += n as u64 * PAGE_SIZE;
        }
        drop(mm);
        // Device pages are faulted in as they are (without `mmap_lock`,
        // which the fault takes). A page gone again is simply not mirrored.
        for &(a, e) in refault.iter() {
            let _ = self.fault(HmmEventType::DeviceReadFault, a, e);
        }
        Ok(moved)
    }

    /// Mirrors the device pages a step moved to (`moved`: per page from
    /// `start`, the device PFN or 0, and whether it is writable), or, if an
    /// invalidation started since the kernel moved them (anywhere in the
    /// mm: the sequence is the mirror's), removes the entries of the pages
    /// that moved and returns `true`: the caller faults them in afresh.
    /// `private`: the pages are device-private (entries get `DEVICE`).
    fn map_moved(&self, moved: &[Planned], start: u64, private: bool) -> Result<bool> {
        let seq = self.interval.read_begin();
        let end = start + moved.len() as u64 * PAGE_SIZE;
        let mut entries = KVec::with_capacity(moved.len(), GFP_KERNEL)?;
        loop {
            let mut res = self.pt.reserve(start, end, false, GFP_KERNEL)?;
            let mut table = self.pt.lock();
            let raced = self.interval.read_retry(seq);
            let mut done = Ok(());
            // Runs of pages that moved, each changed in the table at once.
            let mut i = 0;
            while i < moved.len() && done.is_ok() {
                let run = moved[i..].iter().take_while(|p| p.pfn != 0).count();
                if run == 0 {
                    i += 1;
                    continue;
                }
                let addr = start + i as u64 * PAGE_SIZE;
                let run_end = addr + run as u64 * PAGE_SIZE;
                done = if raced {
                    table
                        .update(addr, run_end, PtFlags::NONE, |d| self.dirty(d))
                        .map(|_| ())
                } else {
                    // The CPU cannot address device-private pages.
                    let d = if private {
                        PtFlags::DEVICE
                    } else {
                        PtFlags::NONE
                    };
                    entries.clear();
                    for p in &moved[i..i + run] {
                        let w = if p.write {
                            PtFlags::WRITE
                        } else {
                            PtFlags::NONE
                        };
                        entries
                            .push_within_capacity(PtEntry::new(p.pfn, d | w)?)
                            .map_err(|_| ENOMEM)?;
                    }
                    table.populate(&mut res, addr, &entries, |d| self.dirty(d))
                };
                i += run;
            }
            match done {
                // Directories ran short (a racing fault took some): again.
                Err(EAGAIN) => continue,
                r => return r.map(|()| raced),
            }
        }
    }
}
