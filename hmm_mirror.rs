// SPDX-License-Identifier: GPL-2.0

//! Mirrors: one device's view of one mm, and device faults into it.
//!
//! A device driver registers a mirror of an mm with its [`MirrorOps`]. The
//! mirror holds a reference on the mm's [`HmmMm`] (the one `mmu_notifier` of
//! the mm, shared by all its mirrors) and its own page table ([`HmmPt`]).
//! Sequence counts of `mmu_interval_notifier`s keep device faults from
//! committing stale entries. Each fault inserts one over its own range
//! ([`FaultWatch`]), so that only invalidations overlapping it make it retry
//! (unmapping unrelated memory does not); the mirror has one over all of
//! user space for snapshots, exclusive access and migration:
//!
//! - a fault reads the sequence (`mmu_interval_read_begin`), faults the range
//!   in with `hmm_range_fault`, takes the table lock, and commits only if no
//!   invalidation has started since (`mmu_interval_read_retry`), else retries;
//! - an invalidation first bumps the sequence under the same lock (mm runs
//!   interval notifiers before plain ones); then the core's notifier calls the
//!   driver's [`MirrorOps::update`] and applies the event to the table.
//!
//! So a faulted entry is either committed before the invalidation applies its
//! event, which then removes it, or not committed at all.
//!
//! Faults run in chunks of at most 2 MiB through
//! `hmm_range_fault_unlocked_timeout`, which takes `mmap_lock` itself and lets
//! fault handlers drop it (userfaultfd), so one call cannot hold the lock or
//! a CPU for long.

pub(crate) mod advice;
mod batch;
pub(crate) mod devmem;
pub(crate) mod dma;
mod fault;
mod interval;
mod migrate;
mod snapshot;

pub(crate) use batch::{Access, FaultRequest, FAULT_BATCH_MAX};
#[cfg(CONFIG_KUNIT)]
pub(crate) use snapshot::snap;

use core::ptr::NonNull;
use devmem::Owner;
use dma::{DmaMapping, DmaTable};
use interval::{Interval, Watches};
use kernel::{
    device::Device,
    mm::MmWithUser,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
};

use crate::{
    hmm_event::{HmmEvent, HmmEventType},
    hmm_mm::HmmMmRef,
    hmm_pt::{HmmPt, PageDirs, PtDirty, PtFlags, PtLevels, PtMapping, PAGE_SIZE},
    shim, trace,
};

/// Whether a device finished with an event's range: its table changes
/// only then ([`HmmMirror::invalidate_apply`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Finished {
    /// The device no longer uses the range.
    Yes,
    /// It could not finish without sleeping: the table keeps its entries.
    No,
}

/// How many passes an invalidation took a mirror through, for its trace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Passes {
    /// `update()` was done at once.
    One,
    /// `update()` was pending and `update_finish()` waited for the device.
    Two,
}

/// What a driver's [`MirrorOps::update`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Update {
    /// The device no longer uses what the event removes.
    Done,
    /// The device's invalidation has started and is not complete:
    /// [`MirrorOps::update_finish`] waits for it, once every mirror of the
    /// mm has started its own.
    Pending,
}

/// What a device driver does for its mirrors.
///
/// An invalidation runs in three passes over the mm's mirrors, with the
/// mirror list locked (no mirror comes or goes meanwhile): every
/// [`Self::update`] (a mirror whose device is done at once has its table
/// changed and [`Self::update_end`] called right after, as always); then
/// [`Self::update_finish`] of those that answered [`Update::Pending`]; then
/// their tables change, dirty bits go to the pages, and `update_end` runs.
/// So K devices that each need time to flush their TLBs cost the slowest
/// one, not the sum. A driver that answers pending must not hold, from
/// `update` to `update_end`, a lock that another of its mirrors of the same
/// mm takes in `update`.
pub(crate) trait MirrorOps: Send + Sync {
    /// An event is about to change `[event.start, event.end)` of the mirrored
    /// mm: the device must stop using what the event removes (see
    /// [`HmmEvent::keep`]), or start doing so and answer [`Update::Pending`].
    /// Runs before the mirror table changes. Must not drop a mirror. Must
    /// not sleep unless `blockable`; if it cannot stop the device without
    /// sleeping, it returns `EAGAIN` (only then), the mirror is left alone
    /// (no `update_finish`, no `update_end`) and mm retries the whole
    /// invalidation later. Other errors are logged; the event stands.
    fn update(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result<Update>;

    /// Waits for the device invalidation that [`Self::update`] started
    /// (only after it answered [`Update::Pending`]; every other device's has
    /// started by then). Must not sleep unless `blockable`; if it cannot
    /// finish without sleeping it returns `EAGAIN`: the mirror's table is
    /// left alone, `update_end` still runs, and the invalidation fails with
    /// `EAGAIN` (mm retries it). Other errors are logged; the event stands.
    fn update_finish(&self, _mirror: &HmmMirror, _event: &HmmEvent, _blockable: bool) -> Result {
        Ok(())
    }

    /// The mirror table reflects `event` now (called after a successful
    /// [`Self::update`] and, if pending, [`Self::update_finish`], in the
    /// same context): a driver that keeps its device
    /// off the range from `update` until here, e.g. by holding a lock, never
    /// lets it see a page the CPU is about to free.
    fn update_end(&self, _mirror: &HmmMirror, _event: &HmmEvent) {}

    /// The mm is going away: the mirror table is emptied after this returns,
    /// and faults fail with `ESRCH` from then on. May sleep. Like `update`,
    /// runs with the mm's mirror list locked: it must not drop a mirror.
    fn release(&self, mirror: &HmmMirror);
}

/// One device's mirror of one mm.
///
/// # Invariants
///
/// - Once [`HmmMirror::register_dma`] returns it, `interval` is inserted
///   over all of user space in the mm of `hmm`, for this mirror.
/// - While the mirror is on `hmm`'s mirror list, it is pinned in an [`Arc`]
///   and alive; it leaves the list in its destructor, first thing.
#[pin_data(PinnedDrop)]
pub(crate) struct HmmMirror {
    #[pin]
    interval: Interval,
    #[pin]
    pt: HmmPt<PageDirs>,
    hmm: HmmMmRef,
    ops: KBox<dyn MirrorOps>,
    /// The mirror's device: its device pages are mirrored as they are.
    owner: Owner,
    /// The DMA mappings of the mirrored pages, for a mirror bound to a
    /// `struct device` ([`dma`]).
    dma: Option<Pin<KBox<DmaTable>>>,
    /// The mm released this mirror: it holds nothing and cannot fault.
    released: Atomic<bool>,
    /// The windows its batched faults are faulting now.
    #[pin]
    in_flight: batch::InFlight,
    /// Advice per range, and the device memory `PREFER_DEVICE` means.
    #[pin]
    advice: advice::AdviceMap,
    #[pin]
    preferred: Mutex<Option<Arc<devmem::DevMem>>>,
    /// Thrash control's history of its 2 MiB blocks.
    #[pin]
    thrash: migrate::thrash::Blocks,
    /// Number for debugfs and traces.
    id: u64,
    /// Successful device faults.
    faults: Atomic<u64>,
    /// Invalidations that overlapped a fault in flight, and the times a
    /// fault chunk was faulted in again because of one.
    fault_races: Atomic<u64>,
    fault_retries: Atomic<u64>,
    /// Events applied.
    invalidations: Atomic<u64>,
    /// Pages dirtied because the device may have written them.
    dirtied: Atomic<u64>,
}

/// Numbers mirrors for debugfs.
static NEXT_MIRROR_ID: Atomic<u64> = Atomic::new(1);

/// A listed mirror: alive while on [`MIRRORS`] (it unlists itself first
/// thing in its destructor).
struct Listed(NonNull<HmmMirror>);

// SAFETY: Only used under `MIRRORS`; mirrors are shared between tasks.
unsafe impl Send for Listed {}

kernel::sync::global_lock! {
    // SAFETY: Initialised by `init` in module init, before any mirror.
    unsafe(uninit) static MIRRORS: Mutex<KVec<Listed>> = KVec::new();
}

/// Sets up the mirror registry; called once from module init.
pub(crate) fn init() {
    // SAFETY: Called once, before any mirror exists.
    unsafe { MIRRORS.init() };
    dma::init();
}

/// Frees the registry's buffer; called once from module exit, when no
/// mirror is left. (A static is never dropped: its buffer would leak at
/// every unload.)
pub(crate) fn exit() {
    *MIRRORS.lock() = KVec::new();
    dma::exit();
}

/// Writes the statistics of every mirror and its mm (debugfs `hmm_rs/stats`).
/// Takes mutexes: may sleep.
pub(crate) fn write_stats(f: &mut impl core::fmt::Write) -> core::fmt::Result {
    crate::stats::write(f)?;
    let mirrors = MIRRORS.lock();
    writeln!(f, "mirrors {}", mirrors.len())?;
    for m in mirrors.iter() {
        // SAFETY: Listed, so alive while we hold `MIRRORS`.
        let m = unsafe { m.0.as_ref() };
        m.write_stats(f)?;
        m.hmm.write_stats(f)?;
    }
    Ok(())
}

// SAFETY: The interval notifier is only touched by mm and by us through
// its address, which mm synchronises; everything else is `Sync`.
unsafe impl Sync for HmmMirror {}
// SAFETY: As above; a mirror can be dropped from any process context.
unsafe impl Send for HmmMirror {}

/// Marks the page of a dirty entry dirty: the device may have written it.
/// Pages in device memory have no CPU page to dirty.
fn dirty_page(d: PtDirty) {
    if !d.entry.flags().contains(PtFlags::DEVICE) {
        // SAFETY: Any PFN may be passed; invalid ones are ignored.
        unsafe { shim::hmm_rs_mark_pfn_dirty(d.entry.pfn() as usize) };
    }
}

impl HmmMirror {
    /// Registers a mirror of `mm` for the device `owner`, driven by `ops`.
    /// May sleep (takes `mmap_lock`, allocates with `GFP_KERNEL`). (The C
    /// API goes through [`Self::register_dma`].)
    #[cfg_attr(not(any(CONFIG_KUNIT, hmm_rs_bench)), expect(dead_code))]
    pub(crate) fn register(
        mm: &MmWithUser,
        owner: Owner,
        ops: KBox<dyn MirrorOps>,
    ) -> Result<Arc<Self>> {
        Self::register_dma(mm, owner, ops, None)
    }

    /// [`Self::register`], bound to `dev` if given: the mirrored pages are
    /// DMA-mapped for it ([`dma`]).
    pub(crate) fn register_dma(
        mm: &MmWithUser,
        owner: Owner,
        ops: KBox<dyn MirrorOps>,
        dev: Option<ARef<Device>>,
    ) -> Result<Arc<Self>> {
        let hmm = HmmMmRef::get(mm)?;
        // SAFETY: No preconditions.
        let levels = match unsafe { shim::hmm_rs_user_address_bits() } {
            0..=48 => PtLevels::Four,
            _ => PtLevels::Five,
        };
        let dma = match dev {
            Some(dev) => Some(KBox::pin_init(DmaTable::new(levels, dev), GFP_KERNEL)?),
            None => None,
        };
        let mirror = Arc::pin_init(
            try_pin_init!(Self {
                interval <- Interval::new(Watches::Mirror),
                pt <- HmmPt::new(levels, PageDirs),
                hmm,
                ops,
                owner,
                dma,
                released: Atomic::new(false),
                in_flight <- batch::InFlight::new(),
                advice <- advice::AdviceMap::new(),
                preferred <- new_mutex!(None, "hmm_rs_mirror_preferred"),
                thrash <- migrate::thrash::Blocks::new(),
                id: NEXT_MIRROR_ID.fetch_add(1, Relaxed),
                faults: Atomic::new(0),
                fault_races: Atomic::new(0),
                fault_retries: Atomic::new(0),
                invalidations: Atomic::new(0),
                dirtied: Atomic::new(0),
            }? Error),
            GFP_KERNEL,
        )?;
        // SAFETY: `interval` is a field of `mirror`, of `mm`, not inserted yet.
        unsafe { mirror.interval.insert_all(&mirror, mm)? };
        MIRRORS
            .lock()
            .push(Listed(NonNull::from(&*mirror)), GFP_KERNEL)?;
        // SAFETY: The mirror unlists itself first thing in its destructor.
        unsafe { mirror.hmm.add_mirror(NonNull::from(&*mirror))? };
        trace::mirror_register(mirror.id, mirror.hmm.id());
        Ok(mirror)
    }

    /// The mirror's page table, for the device driver to read.
    pub(crate) fn table(&self) -> &HmmPt<PageDirs> {
        &self.pt
    }

    /// The mm's shared HMM state.
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn hmm(&self) -> &crate::hmm_mm::HmmMm {
        &self.hmm
    }

    /// Dirties the page of `d` and counts it.
    fn dirty(&self, d: PtDirty) {
        dirty_page(d);
        self.dirtied.add(1u64 << d.order, Relaxed);
    }

    /// One line of debugfs statistics.
    pub(crate) fn write_stats(&self, f: &mut impl core::fmt::Write) -> core::fmt::Result {
        let s = self.pt.stats();
        let (dma_pages, dma_maps) = self.dma.as_ref().map_or((0, 0), |d| d.counts());
        writeln!(
            f,
            "mirror {}: entries {} pages {} bytes {} faults {} fault_races {} fault_retries {} \
             invalidations {} dirtied {} split_fallbacks {} dma_pages {} dma_mappings {}",
            self.id,
            s.entries,
            s.pages,
            s.bytes(),
            self.faults.load(Relaxed),
            self.fault_races.load(Relaxed),
            self.fault_retries.load(Relaxed),
            self.invalidations.load(Relaxed),
            self.dirtied.load(Relaxed),
            s.split_fallbacks,
            dma_pages,
            dma_maps
        )
    }

    /// Applies `event` (from the core's notifier) in one go: the driver
    /// first (both passes), then the table, dirtying the pages of dirty
    /// entries that lose write access. Fails with `EAGAIN` if the driver
    /// asked for a retry of a non-blockable invalidation.
    pub(crate) fn invalidate(&self, event: &HmmEvent, blockable: bool) -> Result {
        let (finished, passes) = match self.invalidate_start(event, blockable)? {
            Update::Done => (Ok(()), Passes::One),
            Update::Pending => (self.invalidate_finish(event, blockable), Passes::Two),
        };
        let done = if finished.is_ok() {
            Finished::Yes
        } else {
            Finished::No
        };
        self.invalidate_apply(event, done, passes);
        finished
    }

    /// First pass of an invalidation: the driver's `update()`. `EAGAIN`
    /// only if it asked for a retry of a non-blockable invalidation (the
    /// mirror is then left alone); other errors are logged, as done.
    pub(crate) fn invalidate_start(&self, event: &HmmEvent, blockable: bool) -> Result<Update> {
        match self.ops.update(self, event, blockable) {
            Err(EAGAIN) if !blockable => Err(EAGAIN),
            Err(e) => {
                pr_err!(
                    "mirror {}: update() of a {} event failed ({e:?}); the event stands\n",
                    self.id,
                    event.ty.name()
                );
                Ok(Update::Done)
            }
            Ok(u) => Ok(u),
        }
    }

    /// Second pass, for a mirror whose driver answered
    /// [`Update::Pending`]: waits for its device. `EAGAIN` only if a
    /// non-blockable invalidation cannot finish without sleeping; other
    /// errors are logged, as done.
    pub(crate) fn invalidate_finish(&self, event: &HmmEvent, blockable: bool) -> Result {
        match self.ops.update_finish(self, event, blockable) {
            Err(EAGAIN) if !blockable => Err(EAGAIN),
            Err(e) => {
                pr_err!(
                    "mirror {}: update_finish() of a {} event failed ({e:?}); the event stands\n",
                    self.id,
                    event.ty.name()
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Last pass, for a mirror whose `update()` succeeded: the table
    /// changes if its device is done, then `update_end()`.
    pub(crate) fn invalidate_apply(&self, event: &HmmEvent, done: Finished, passes: Passes) {
        let two_pass = passes == Passes::Two;
        // The range is gone whatever the device did: so is its advice.
        if event.ty == HmmEventType::Munmap {
            self.advice.unmapped(event.start, event.end);
        }
        if done == Finished::No {
            self.ops.update_end(self, event);
            trace::mirror_update(self.id, event, 0, 0, two_pass, false);
            return;
        }
        let end = event.end.min(self.pt.limit());
        let (mut entries, mut dirtied) = (0, 0);
        // The device is done with the range: its mappings of entries that
        // go or lose write access go first, before any page can.
        if !event.keep.contains(PtFlags::VALID | PtFlags::WRITE) {
            self.unmap_dma(event.start, end);
        }
        if event.start < end {
            // The range is page aligned and within the table: cannot fail.
            entries = self
                .pt
                .lock()
                .update(event.start, end, event.keep, |d| {
                    dirtied += 1 << d.order;
                    self.dirty(d)
                })
                .unwrap_or(0);
        }
        self.ops.update_end(self, event);
        self.invalidations.add(1, Relaxed);
        trace::mirror_update(self.id, event, entries, dirtied, two_pass, true);
    }

    /// The mm is going away: tell the driver, then empty the table.
    pub(crate) fn release(&self) {
        self.released.store(true, Relaxed);
        trace::release(self.id, self.hmm.id());
        self.ops.release(self);
        if let Some(dma) = &self.dma {
            dma.clear();
        }
        self.pt.lock().clear(|d| self.dirty(d));
    }

    /// Unmaps the DMA mappings overlapping `[start, end)`, if the mirror
    /// is DMA-mapped: for events, and for the mirror's own migration, whose
    /// event it does not apply (its pages that move are freed). Never
    /// sleeps.
    pub(crate) fn unmap_dma(&self, start: u64, end: u64) {
        if let Some(dma) = &self.dma {
            dma.remove(start, end);
        }
    }

    /// The device is going away: unmaps every DMA mapping of the mirror;
    /// its faults fail with `ENODEV` from now on. Returns `EINVAL` for a
    /// mirror that is not DMA-mapped. Never sleeps.
    pub(crate) fn unbind_dma(&self) -> Result {
        self.dma.as_ref().ok_or(EINVAL)?.unbind();
        Ok(())
    }

    /// Calls `f` for each mapping of the mirror overlapping `[start, end)`
    /// in address order with the DMA address of its first page, or `None`
    /// where the device has no mapping (device-private and exclusive
    /// entries, a mirror that is not DMA-mapped, entries whose mapping an
    /// event removed in part: fault them again). Stops when `f` returns
    /// true; returns whether it did. Runs under RCU: `f` must not sleep.
    pub(crate) fn walk_dma(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&PtMapping, Option<u64>) -> bool,
    ) -> Result<bool> {
        self.pt.walk_until(start, end, |m| {
            let dma = self
                .dma
                .as_ref()
                .filter(|_| !m.entry.flags().contains(PtFlags::DEVICE))
                .and_then(|d| d.lookup(m.addr))
                .filter(|d: &DmaMapping| {
                    d.addr <= m.addr && m.end() <= d.addr + (PAGE_SIZE << d.order)
                })
                .map(|d| d.dma + (m.addr - d.addr));
            f(m, dma)
        })
    }
}

#[pinned_drop]
impl PinnedDrop for HmmMirror {
    fn drop(self: Pin<&mut Self>) {
        let me = NonNull::from(&*self);
        let mut listed = MIRRORS.lock();
        if let Some(i) = listed.iter().position(|m| m.0 == me) {
            // In bounds: just found.
            let _ = listed.remove(i);
        }
        drop(listed);
        // The device mappings go and what the device may have written is
        // dirtied while the mirror still hears invalidations: until it
        // leaves the mm's list, no page it names can be freed before an
        // invalidation has removed it here, under the same table lock.
        // (Nothing faults into a mirror being dropped: faults hold it.)
        if let Some(dma) = &self.dma {
            dma.clear();
        }
        self.pt.lock().clear(dirty_page);
        // No invalidation reaches the mirror after this. (Its interval
        // notifier, the first field, is removed first when the fields drop.)
        self.hmm.remove_mirror(me);
        trace::mirror_register(self.id, 0);
    }
}

#[cfg(CONFIG_KUNIT = "y")]
mod tests;
