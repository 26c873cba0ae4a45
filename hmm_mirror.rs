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

pub(crate) mod devmem;
pub(crate) mod dma;
mod migrate;

use core::ptr::NonNull;
use devmem::{DevicePfns, Owner};
use dma::{DmaMapping, DmaTable, ToMap};
use kernel::{
    bindings,
    device::Device,
    mm::MmWithUser,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc,
    },
    types::Opaque,
};

use crate::{
    hmm_event::{HmmEvent, HmmEventType},
    hmm_mm::HmmMmRef,
    hmm_pt::{
        HmmPt, PageDirs, PtDirty, PtEntry, PtFlags, PtLevels, PtMapping, Reserve, HUGE_ORDER,
        HUGE_SIZE, PAGE_SIZE,
    },
    shim, trace,
};

/// Retries of one fault chunk that keeps racing with invalidations before
/// the fault gives up with `EAGAIN`.
const FAULT_RETRIES: u32 = 1000;

/// `hmm_rs_range_fault()` modes (hmm_shim.h).
const FAULT_NONE: u32 = 0;
const FAULT_READ: u32 = 1 << 0;
const FAULT_WRITE: u32 = 1 << 1;

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
/// - While `inserted` is true, `interval` is inserted in the mm of `hmm`
///   with [`MIRROR_INTERVAL_OPS`].
/// - While the mirror is on `hmm`'s mirror list, it is pinned in an [`Arc`]
///   and alive; it leaves the list in its destructor, first thing.
#[pin_data(PinnedDrop)]
pub(crate) struct HmmMirror {
    #[pin]
    interval: Opaque<bindings::mmu_interval_notifier>,
    #[pin]
    pt: HmmPt<PageDirs>,
    hmm: HmmMmRef,
    ops: KBox<dyn MirrorOps>,
    /// The mirror's device: its device pages are mirrored as they are.
    owner: Owner,
    /// The DMA mappings of the mirrored pages, for a mirror bound to a
    /// `struct device` ([`dma`]).
    dma: Option<Pin<KBox<DmaTable>>>,
    inserted: Atomic<bool>,
    /// The mm released this mirror: it holds nothing and cannot fault.
    released: Atomic<bool>,
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
struct FaultBufs {
    hmm_pfns: KVec<kernel::ffi::c_ulong>,
    dma_buf: KVec<PtEntry>,
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

/// Numbers mirrors for debugfs.
static NEXT_MIRROR_ID: Atomic<u64> = Atomic::new(1);

/// Over all mirrors so far (debugfs): device faults, invalidations that
/// overlapped a fault in flight, and fault chunks faulted in again.
static ALL_FAULTS: Atomic<u64> = Atomic::new(0);
static ALL_FAULT_RACES: Atomic<u64> = Atomic::new(0);
static ALL_FAULT_RETRIES: Atomic<u64> = Atomic::new(0);

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
/// mirror is left. (A static is never dropped: without this its buffer
/// leaked at every unload, found by kmemleak.)
pub(crate) fn exit() {
    *MIRRORS.lock() = KVec::new();
    dma::exit();
}

/// Writes the statistics of every mirror and its mm (debugfs `hmm_rs/stats`).
/// Takes mutexes: may sleep.
pub(crate) fn write_stats(f: &mut impl core::fmt::Write) -> core::fmt::Result {
    devmem::write_stats(f)?;
    dma::write_stats(f)?;
    crate::hmm_mm::write_event_stats(f)?;
    writeln!(
        f,
        "faults {} fault races {} fault retries {}",
        ALL_FAULTS.load(Relaxed),
        ALL_FAULT_RACES.load(Relaxed),
        ALL_FAULT_RETRIES.load(Relaxed)
    )?;
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

/// The interval notifier callbacks of every mirror.
static MIRROR_INTERVAL_OPS: bindings::mmu_interval_notifier_ops =
    bindings::mmu_interval_notifier_ops {
        invalidate: Some(mirror_interval_invalidate),
        // SAFETY: The other members are optional callbacks; null is "none".
        ..unsafe { core::mem::zeroed() }
    };

/// An invalidation is starting: bump the mirror's sequence under its table
/// lock, so that a fault committing under that lock sees it.
///
/// # Safety
///
/// Called by mm for an inserted interval notifier of a live mirror.
unsafe extern "C" fn mirror_interval_invalidate(
    sub: *mut bindings::mmu_interval_notifier,
    _range: *const bindings::mmu_notifier_range,
    cur_seq: kernel::ffi::c_ulong,
) -> bool {
    // SAFETY: `sub` is the `interval` field of a live `HmmMirror`:
    // `mmu_interval_notifier_remove` waits for this callback before the
    // mirror is freed.
    let mirror = unsafe {
        &*kernel::container_of!(
            sub.cast::<Opaque<bindings::mmu_interval_notifier>>(),
            HmmMirror,
            interval
        )
    };
    // SAFETY: `sub` is the mirror's own, inserted.
    unsafe { mirror.bump_seq(sub, cur_seq) };
    true
}

/// The interval notifier callbacks of each fault's [`FaultWatch`].
static FAULT_WATCH_OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
    invalidate: Some(fault_watch_invalidate),
    // SAFETY: The other members are optional callbacks; null is "none".
    ..unsafe { core::mem::zeroed() }
};

/// An `mmu_interval_notifier` over the range of one device fault, whose
/// sequence the fault commits under: only invalidations that overlap the
/// range make it retry. One over all of user space (as `lib/test_hmm.c`
/// has) would make every fault retry whenever unrelated memory is unmapped.
///
/// # Invariants
///
/// While `inserted` is true, `sub` is inserted over the fault's range in the
/// mm of `mirror` with [`FAULT_WATCH_OPS`]; `mirror` outlives the watch.
#[pin_data(PinnedDrop)]
pub(crate) struct FaultWatch {
    #[pin]
    sub: Opaque<bindings::mmu_interval_notifier>,
    mirror: NonNull<HmmMirror>,
    inserted: Atomic<bool>,
}

impl FaultWatch {
    /// Watches `[start, end)` of `mirror`'s mm, which must be a checked
    /// range; the watch must be dropped before `mirror`. May sleep.
    fn new(mirror: &HmmMirror, start: u64, end: u64) -> Result<Pin<KBox<Self>>> {
        let w = KBox::pin_init(
            pin_init!(Self {
                sub: Opaque::uninit(),
                mirror: NonNull::from(mirror),
                inserted: Atomic::new(false),
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: `sub` is pinned and not inserted; the ops are static; the
        // mirror's own interval is inserted (type invariant of `HmmMirror`)
        // and names the mm.
        kernel::error::to_result(unsafe {
            shim::hmm_rs_interval_insert_range(
                w.sub.get(),
                mirror.interval.get(),
                start as usize,
                end as usize,
                &FAULT_WATCH_OPS,
            )
        })?;
        // INVARIANT: inserted just above.
        w.inserted.store(true, Relaxed);
        Ok(w)
    }
}

#[pinned_drop]
impl PinnedDrop for FaultWatch {
    fn drop(self: Pin<&mut Self>) {
        if self.inserted.load(Relaxed) {
            // SAFETY: Inserted (type invariant); waits for callbacks.
            unsafe { bindings::mmu_interval_notifier_remove(self.sub.get()) };
        }
    }
}

/// An invalidation overlaps a fault in flight: bump the fault's sequence
/// under the mirror's table lock, which the fault commits under.
///
/// # Safety
///
/// Called by mm for the inserted interval notifier of a live [`FaultWatch`].
unsafe extern "C" fn fault_watch_invalidate(
    sub: *mut bindings::mmu_interval_notifier,
    _range: *const bindings::mmu_notifier_range,
    cur_seq: kernel::ffi::c_ulong,
) -> bool {
    // SAFETY: `sub` is the `sub` field of a live `FaultWatch`:
    // `mmu_interval_notifier_remove` waits for this callback before the
    // watch is freed.
    let watch = unsafe {
        &*kernel::container_of!(
            sub.cast::<Opaque<bindings::mmu_interval_notifier>>(),
            FaultWatch,
            sub
        )
    };
    // SAFETY: The mirror outlives its watches (type invariant).
    let mirror = unsafe { watch.mirror.as_ref() };
    mirror.fault_races.add(1, Relaxed);
    ALL_FAULT_RACES.add(1, Relaxed);
    // SAFETY: `sub` is inserted, a watch of this mirror.
    unsafe { mirror.bump_seq(sub, cur_seq) };
    true
}

/// Whether `pfn` is a device-private page; the `struct page` is looked at
/// only if `pfn` is within `dev`.
fn is_device_private(dev: DevicePfns, pfn: kernel::ffi::c_ulong) -> bool {
    // SAFETY: No preconditions.
    dev.may_be_device(pfn as u64) && unsafe { shim::hmm_rs_pfn_is_device_private(pfn) }
}

/// Marks the page of a dirty entry dirty: the device may have written it.
/// Pages in device memory have no CPU page to dirty.
fn dirty_page(d: PtDirty) {
    if !d.entry.flags().contains(PtFlags::DEVICE) {
        // SAFETY: Any PFN may be passed; invalid ones are ignored.
        unsafe { shim::hmm_rs_mark_pfn_dirty(d.entry.pfn() as usize) };
    }
}

impl HmmMirror {
    /// An invalidation starts: sets `sub`'s sequence to `cur_seq` under the
    /// table lock, which faults and migrations commit under.
    ///
    /// # Safety
    ///
    /// `sub` is an inserted interval notifier of this mirror (its own or a
    /// fault's watch), in its invalidate callback.
    unsafe fn bump_seq(&self, sub: *mut bindings::mmu_interval_notifier, cur_seq: usize) {
        let _table = self.pt.lock();
        // SAFETY: By the caller's guarantee; we hold the lock.
        unsafe { shim::hmm_rs_interval_set_seq(sub, cur_seq) };
    }

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
                interval: Opaque::uninit(),
                pt <- HmmPt::new(levels, PageDirs),
                hmm,
                ops,
                owner,
                dma,
                inserted: Atomic::new(false),
                released: Atomic::new(false),
                id: NEXT_MIRROR_ID.fetch_add(1, Relaxed),
                faults: Atomic::new(0),
                fault_races: Atomic::new(0),
                fault_retries: Atomic::new(0),
                invalidations: Atomic::new(0),
                dirtied: Atomic::new(0),
            }? Error),
            GFP_KERNEL,
        )?;
        // SAFETY: `interval` is pinned in the mirror and not inserted yet; the
        // ops are static; `mm` has users.
        kernel::error::to_result(unsafe {
            shim::hmm_rs_interval_insert(mirror.interval.get(), mm.as_raw(), &MIRROR_INTERVAL_OPS)
        })?;
        // INVARIANT: inserted with `MIRROR_INTERVAL_OPS` just above.
        mirror.inserted.store(true, Relaxed);
        MIRRORS
            .lock()
            .push(Listed(NonNull::from(&*mirror)), GFP_KERNEL)?;
        mirror.hmm.add_mirror(NonNull::from(&*mirror))?;
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
        let (finished, two_pass) = match self.invalidate_start(event, blockable)? {
            Update::Done => (Ok(()), false),
            Update::Pending => (self.invalidate_finish(event, blockable), true),
        };
        self.invalidate_apply(event, finished.is_ok(), two_pass);
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
    /// changes (if `change`: its device is done), then `update_end()`.
    /// `two_pass`: the device was waited for in a second pass.
    pub(crate) fn invalidate_apply(&self, event: &HmmEvent, change: bool, two_pass: bool) {
        if !change {
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
        trace::fault_begin(self.id, ty, start, end);
        let mut counts = FaultCounts::default();
        let r = self.fault_counted(ty, start, end, then, &mut counts);
        trace::fault_end(self.id, ty, start, end, &r, counts.retries, counts.huge);
        r
    }

    fn fault_counted(
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
        let chunk_pages = HUGE_SIZE as usize / PAGE_SIZE as usize;
        let mut bufs = FaultBufs {
            hmm_pfns: KVec::with_capacity(chunk_pages, GFP_KERNEL)?,
            dma_buf: KVec::with_capacity(
                if self.dma.is_some() { chunk_pages } else { 0 },
                GFP_KERNEL,
            )?,
        };
        let watch = FaultWatch::new(self, start, end)?;
        let mut chunk = start;
        while chunk < end {
            let chunk_end = end.min((chunk | (HUGE_SIZE - 1)) + 1);
            self.fault_chunk(&watch, chunk, chunk_end, write, &mut bufs, then, counts)?;
            chunk = chunk_end;
        }
        self.hmm.count(ty);
        self.faults.add(1, Relaxed);
        ALL_FAULTS.add(1, Relaxed);
        Ok(())
    }

    /// What the CPU maps in `[start, end)` now, without faulting anything
    /// in: one [`snap`] value per page into `out`, which must have room for
    /// exactly that many. Does not change the mirror. May sleep.
    ///
    /// Errors: `EINVAL` for a bad range or `out` of the wrong length;
    /// `ESRCH` once the mm is exiting; `ENOMEM`; `EAGAIN` if invalidations
    /// kept racing with it.
    pub(crate) fn snapshot(&self, start: u64, end: u64, out: &mut [u32]) -> Result {
        let r = self.snapshot_into(start, end, out);
        trace::snapshot(self.id, start, end, &r);
        r
    }

    fn snapshot_into(&self, start: u64, end: u64, out: &mut [u32]) -> Result {
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
        let mut chunk = start;
        let mut done = 0;
        while chunk < end {
            let chunk_end = end.min((chunk | (HUGE_SIZE - 1)) + 1);
            let mut tries = 0;
            loop {
                match self.range_fault(
                    None,
                    chunk,
                    chunk_end,
                    &mut hmm_pfns,
                    FAULT_NONE,
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
            chunk = chunk_end;
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
        let r = self.make_exclusive_locked(start, end);
        trace::exclusive(self.id, start, end, &r);
        r
    }

    fn make_exclusive_locked(&self, start: u64, end: u64) -> Result {
        self.pt.check_range(start, end)?;
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        let sub = self.interval.get();
        // SAFETY: `interval` is inserted (type invariant).
        kernel::error::to_result(unsafe { shim::hmm_rs_mm_lock(sub) })?;
        let mut result = Ok(());
        let mut addr = start;
        while addr < end && result.is_ok() {
            // A page at a time over what may be a large VMA: a kill ends it.
            // SAFETY: No preconditions.
            if unsafe { shim::hmm_rs_fatal_signal_pending() } {
                result = Err(EINTR);
                break;
            }
            let mut folio = core::ptr::null_mut();
            let owner = core::ptr::from_ref(self).cast_mut().cast();
            // SAFETY: We hold the mm's `mmap_lock` (`hmm_rs_mm_lock`).
            let pfn = unsafe { shim::hmm_rs_make_exclusive(sub, addr as usize, owner, &mut folio) };
            if pfn < 0 {
                result = Err(Error::from_errno(pfn as i32));
                break;
            }
            // The folio is locked: the CPU cannot take the access back
            // before the entry is in the table.
            result = self.map_exclusive(addr, pfn as u64);
            // SAFETY: The folio `hmm_rs_make_exclusive` locked and returned.
            unsafe { shim::hmm_rs_exclusive_done(folio) };
            addr += PAGE_SIZE;
        }
        // SAFETY: Paired with `hmm_rs_mm_lock` above.
        unsafe { shim::hmm_rs_mm_unlock(sub) };
        result
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

    /// Faults one chunk (within one 2 MiB region) in and commits it,
    /// retrying while invalidations race with it.
    #[expect(clippy::too_many_arguments)]
    fn fault_chunk(
        &self,
        watch: &FaultWatch,
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
                ALL_FAULT_RETRIES.add(1, Relaxed);
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
    fn fault_in(
        &self,
        watch: &FaultWatch,
        start: u64,
        end: u64,
        write: bool,
        hmm_pfns: &mut KVec<kernel::ffi::c_ulong>,
    ) -> Result<kernel::ffi::c_ulong> {
        let how = if write {
            FAULT_READ | FAULT_WRITE
        } else {
            FAULT_READ
        };
        let sub = Some(watch);
        let seq = match self.range_fault(sub, start, end, hmm_pfns, how, self.owner) {
            // 7.3 reports a write to read-only memory as EFAULT too.
            Err(EFAULT)
                if write
                    && self
                        .range_fault(sub, start, end, hmm_pfns, FAULT_READ, self.owner)
                        .is_ok() =>
            {
                return Err(EPERM)
            }
            r => r?,
        };
        // SAFETY: No preconditions.
        let (pfn_flags, writable) = unsafe { (shim::hmm_rs_pfn_flags, shim::hmm_rs_pfn_write) };
        let dev = DevicePfns::now();
        // Device pages of ours come as they are, read-only after a fork:
        // writing needs them back in system memory, where COW breaks.
        if write
            && hmm_pfns
                .iter()
                .any(|p| p & writable == 0 && is_device_private(dev, p & !pfn_flags))
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
    fn commit(
        &self,
        watch: &FaultWatch,
        start: u64,
        end: u64,
        write: bool,
        seq: kernel::ffi::c_ulong,
        bufs: &mut FaultBufs,
        then: &mut dyn FnMut(u64, u64) -> Result,
    ) -> Result<Option<bool>> {
        let (hmm_pfns, dma_buf) = (&bufs.hmm_pfns[..], &mut bufs.dma_buf);
        let flags = if write {
            PtFlags::WRITE | PtFlags::DIRTY
        } else {
            PtFlags::NONE
        };
        // SAFETY: No preconditions.
        let (pfn_flags, error) = unsafe { (shim::hmm_rs_pfn_flags, shim::hmm_rs_pfn_error) };
        if hmm_pfns.iter().any(|p| p & error != 0) {
            return Err(EFAULT);
        }
        // SAFETY: No preconditions.
        let order = unsafe { shim::hmm_rs_pfn_order(hmm_pfns[0]) };
        let first = (hmm_pfns[0] & !pfn_flags) as u64;
        let huge = hmm_pfns.len() == 1 << HUGE_ORDER
            && order >= HUGE_ORDER
            && first % (1 << HUGE_ORDER) == 0;
        let dev = DevicePfns::now();
        // hmm pfns have fewer bits than entries: every PFN fits.
        let entry = |p: &kernel::ffi::c_ulong| {
            let pfn = p & !pfn_flags;
            let flags = if is_device_private(dev, pfn) {
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
        // SAFETY: The watch is inserted while it exists (type invariant).
        if unsafe { shim::hmm_rs_interval_read_retry(watch.sub.get(), seq) } {
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
        hmm_pfns: &[kernel::ffi::c_ulong],
        buf: &mut KVec<PtEntry>,
    ) -> Result {
        // SAFETY: No preconditions.
        let pfn_flags = unsafe { shim::hmm_rs_pfn_flags };
        let dev = DevicePfns::now();
        let sys = |p: &kernel::ffi::c_ulong| !is_device_private(dev, p & !pfn_flags);
        let to_map = |p: &kernel::ffi::c_ulong| ToMap {
            pfn: (p & !pfn_flags) as u64,
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
        let how = if fault { FAULT_READ } else { FAULT_NONE };
        let mut chunk = start;
        while chunk < end {
            let chunk_end = end.min((chunk | (HUGE_SIZE - 1)) + 1);
            match self.range_fault(None, chunk, chunk_end, &mut hmm_pfns, how, self.owner) {
                Err(EBUSY) => continue,
                r => r?,
            };
            chunk = chunk_end;
        }
        Ok(())
    }

    /// `hmm_range_fault()` of `[start, end)` into `hmm_pfns`, which it sizes
    /// to one zeroed slot per page, under the sequence of `watch` (else of
    /// the mirror's interval notifier); returns the sequence to commit under.
    fn range_fault(
        &self,
        watch: Option<&FaultWatch>,
        start: u64,
        end: u64,
        hmm_pfns: &mut KVec<kernel::ffi::c_ulong>,
        how: u32,
        owner: Owner,
    ) -> Result<kernel::ffi::c_ulong> {
        hmm_pfns.clear();
        hmm_pfns.resize(((end - start) / PAGE_SIZE) as usize, 0, GFP_KERNEL)?;
        let mut seq = 0;
        let sub = watch.map_or(self.interval.get(), |w| w.sub.get());
        // SAFETY: `sub` is inserted (type invariants of `HmmMirror` and
        // `FaultWatch`); `hmm_pfns` holds one initialised slot per page of
        // the range.
        kernel::error::to_result(unsafe {
            shim::hmm_rs_range_fault(
                sub,
                start as usize,
                end as usize,
                hmm_pfns.as_mut_ptr(),
                how,
                owner.as_ptr(),
                &mut seq,
            )
        })?;
        Ok(seq)
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
        // No invalidation reaches the mirror after this.
        self.hmm.remove_mirror(me);
        if self.inserted.load(Relaxed) {
            // SAFETY: Inserted (type invariant); this waits for running
            // callbacks, so none is left when the mirror is freed.
            unsafe { bindings::mmu_interval_notifier_remove(self.interval.get()) };
        }
        trace::mirror_register(self.id, 0);
    }
}

#[cfg(CONFIG_KUNIT = "y")]
mod tests;
