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

use kernel::{prelude::*, sync::atomic::Relaxed};

mod step;
pub(crate) mod thrash;

pub(crate) use step::{now_ns, Migration, Source};

use super::devmem::{DevMem, Policy};
use super::{interval::fatal_signal_pending, HmmMirror};
use crate::{
    hmm_event::HmmEventType,
    hmm_pt::{huge_chunk_end, PtEntry, PtFlags, HUGE_ORDER, HUGE_SIZE, PAGE_SIZE},
    shim, stats,
    trace::{self, MigrateCounts},
};

/// Extra tries, a millisecond apart, of a step in which pages were busy.
const BUSY_TRIES: u32 = 10;

/// Pages per migration step (`HMM_RS_MIGRATE_MAX` of hmm_shim.h).
const MIGRATE_MAX: usize = 512;
/// Pages of a huge folio.
pub(crate) const HUGE_PAGES: usize = 1 << HUGE_ORDER;

/// Where page `i` of a step goes: `pfn` (0: nowhere), whether writable,
/// the index whose migration decides whether it moved (a huge folio's
/// head), and whether it found no room in device memory.
#[derive(Clone, Copy)]
struct Planned {
    pfn: u64,
    write: bool,
    head: usize,
    no_room: bool,
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
        let r = self.migrate_untraced(start, end, to, &mut counts);
        trace::migrate(self.id, to.is_some(), start, end, &r, &counts);
        r
    }

    /// [`Self::migrate`] without its trace.
    fn migrate_untraced(
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
        let thrash = to
            .map(|mem| mem.thrash_settings())
            .filter(|s| s.window != 0);
        let mut addr = start;
        let mut tries = 0;
        // Pages of the current step moved so far, over its tries.
        let mut step_moved = 0;
        while addr < end {
            // A task being killed stops between steps (what moved stays
            // moved), so that its exit does not wait for a long migration.
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            // Steps end on 2 MiB boundaries so that huge pages move whole.
            let step_end = huge_chunk_end(addr, end);
            let step_pages = ((step_end - addr) / PAGE_SIZE) as usize;
            if let (Some(mem), Some(_), 0) = (to, thrash, tries) {
                if self.thrash.held(addr, now_ns()) {
                    mem.counters().thrash_held.add(step_pages as u64);
                    counts.held += step_pages;
                    trace::thrash(self.id, addr, 0, true);
                    addr = step_end;
                    continue;
                }
            }
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
                no_room: false,
            };
            plan.clear();
            plan.resize(n, none, GFP_KERNEL)?;
            // Room for what the step moves, now that it is known (pages
            // already there need none). Eviction runs a migration of its
            // own on other pages, device pages it only try-locks, while
            // this one holds its system pages: no lock of one waits for
            // the other. Without room, the pages that do not fit stay.
            if let Some(mem) = to {
                let need = m.pages_to_move();
                if need != 0 && mem.make_room(need) == Err(EINTR) {
                    return Err(EINTR);
                }
            }
            let mut not_placed = 0;
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
                                    not_placed += 1;
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
                    let no_room = to.is_some() && pfn == 0;
                    plan[i + k] = Planned {
                        pfn,
                        write,
                        head,
                        no_room,
                    };
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
                        stats::MIGRATE_RACED.add(1);
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
                        // freed pages (which a later invalidation would
                        // dirty).
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
            let try_moved = plan.iter().filter(|p| p.pfn != 0).count();
            moved += try_moved;
            step_moved += try_moved;
            counts.moved = moved;
            if let Some(mem) = to {
                mem.counters().migrated.add(try_moved as u64);
            }
            // Pages without room are not busy: they stay unless eviction
            // can make room (below).
            let mut busy = (0..n).filter(|&i| m.busy(i) && !plan[i].no_room).count();
            if tries < BUSY_TRIES {
                let dropped = m.dropped(&mm, self.owner.as_ptr(), to.is_some());
                stats::MIGRATE_DROPPED.add(dropped as u64);
                busy += dropped;
            }
            m.finalize();
            // Pages that found no room while more can be evicted: the step
            // again, after eviction.
            let mut unplaced = 0;
            if let Some(mem) = to.filter(|mem| mem.policy() == Policy::EvictLru) {
                if not_placed != 0 && tries < BUSY_TRIES {
                    if mem.make_room(not_placed) == Err(EINTR) {
                        return Err(EINTR);
                    }
                    if mem.free_pages() != 0 {
                        unplaced = not_placed;
                        busy += unplaced;
                    }
                }
            }
            // Pages the kernel could not isolate or move just now (an
            // extra reference, the lock taken) get another chance; what
            // moved is not selected again.
            if busy != 0 && tries < BUSY_TRIES {
                tries += 1;
                stats::MIGRATE_BUSY_RETRIES.add(1);
                // SAFETY: No preconditions.
                stats::MIGRATE_BACKOFF_NS.add(unsafe { shim::hmm_rs_migrate_backoff() });
                continue;
            }
            stats::MIGRATE_STAYED.add((busy - unplaced) as u64);
            counts.stayed += busy - unplaced;
            if let Some(mem) = to {
                stats::NOT_PLACED.add(not_placed as u64);
                mem.counters().not_placed.add(not_placed as u64);
                counts.not_placed += not_placed;
                // Thrash control counts whole 2 MiB blocks that moved: a
                // part of a block moving again (a fault's, the rest of a
                // VMA) does not mean it came back.
                let whole = addr % HUGE_SIZE == 0 && n == HUGE_PAGES;
                if let (Some(s), true) = (thrash, whole && step_moved != 0) {
                    // No memory for its history: the block goes unwatched.
                    if let Ok(Some(hold)) = self.thrash.moved(addr, now_ns(), s) {
                        mem.counters().thrash_detected.add(1);
                        trace::thrash(self.id, addr, hold, false);
                    }
                }
            }
            tries = 0;
            step_moved = 0;
            addr += n as u64 * PAGE_SIZE;
        }
        drop(mm);
        // Device pages are faulted in as they are (without `mmap_lock`,
        // which the fault takes). A page gone again is simply not mirrored.
        for &(a, e) in refault.iter() {
            let _ = self.fault_unadvised(HmmEventType::DeviceReadFault, a, e);
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
        let seq = self.interval.read_begin()?;
        let end = start + moved.len() as u64 * PAGE_SIZE;
        // Where the device only reads (advice), nothing is writable.
        let may_write = self.may_write(start, end);
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
                        let w = if p.write && may_write {
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
