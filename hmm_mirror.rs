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

#[kernel::prelude::kunit_tests(hmm_rs_mirror)]
mod tests {
    use super::*;
    use crate::kunit_helpers::kunit_mm::{self, PROT_NONE, PROT_READ, PROT_WRITE};
    use kernel::{current, new_mutex, new_spinlock, sync::Mutex, sync::SpinLock};

    const PAGE: usize = PAGE_SIZE as usize;

    /// What a test device saw.
    #[pin_data]
    struct Seen {
        /// (type, start, end, whether the table still held the start).
        #[pin]
        events: Mutex<KVec<(HmmEventType, u64, u64, bool)>>,
        releases: Atomic<u64>,
        /// `update_end` calls for munmaps that found the range gone.
        munmap_ends: Atomic<u64>,
    }

    /// A device that records what it is told.
    struct Recorder(Arc<Seen>);

    impl MirrorOps for Recorder {
        fn update(&self, mirror: &HmmMirror, event: &HmmEvent, _blockable: bool) -> Result<Update> {
            let held = mirror.table().lookup(event.start).is_some();
            self.0
                .events
                .lock()
                .push((event.ty, event.start, event.end, held), GFP_ATOMIC)?;
            Ok(Update::Done)
        }

        fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
            if event.ty == HmmEventType::Munmap && mirror.table().lookup(event.start).is_none() {
                self.0.munmap_ends.add(1, Relaxed);
            }
        }

        fn release(&self, _mirror: &HmmMirror) {
            self.0.releases.add(1, Relaxed);
        }
    }

    fn recorder() -> Result<(Arc<Seen>, KBox<dyn MirrorOps>)> {
        let seen = Arc::pin_init(
            pin_init!(Seen {
                events <- new_mutex!(KVec::new()),
                releases: Atomic::new(0),
                munmap_ends: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        let ops: KBox<dyn MirrorOps> = KBox::new(Recorder(seen.clone()), GFP_KERNEL)?;
        Ok((seen, ops))
    }

    fn mirror() -> Result<(Arc<Seen>, Arc<HmmMirror>)> {
        let (seen, ops) = recorder()?;
        let task = current!();
        let mirror = HmmMirror::register(task.mm().ok_or(EINVAL)?, Owner::NONE, ops)?;
        Ok((seen, mirror))
    }

    /// The first byte of the page at `pfn`, read through the kernel mapping.
    fn first_byte(pfn: u64) -> u8 {
        // SAFETY: The test holds the page mapped in its mm.
        let page = unsafe { shim::hmm_rs_pfn_to_page(pfn as usize) };
        assert!(!page.is_null());
        // SAFETY: `page` is a valid lowmem page.
        let addr = unsafe { shim::hmm_rs_page_address(page) };
        // SAFETY: A page's first byte is readable through its kernel address.
        unsafe { *addr.cast::<u8>() }
    }

    #[test]
    fn fault_mirrors_the_right_pages_and_munmap_clears_them() -> Result {
        let n = 8;
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        for i in 0..n {
            kunit_mm::write(addr + i * PAGE, &[i as u8 + 1])?;
        }
        let (seen, m) = mirror()?;
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        m.fault(HmmEventType::DeviceReadFault, start, end)?;
        for i in 0..n as u64 {
            let a = start + i * PAGE_SIZE;
            let map = m.table().lookup(a).ok_or(EFAULT)?;
            assert!(!map.entry.flags().contains(PtFlags::WRITE));
            assert_eq!(first_byte(map.pfn_at(a)), i as u8 + 1);
        }
        assert_eq!(m.table().stats().pages, n as u64);
        assert_eq!(m.hmm().events(HmmEventType::DeviceReadFault), 1);
        kunit_mm::munmap(addr, n * PAGE)?;
        // The device was told first, while the table still held the range.
        // (No lock guard may live across an assertion: a failing one exits.)
        let told = seen
            .events
            .lock()
            .contains(&(HmmEventType::Munmap, start, end, true));
        assert!(told);
        // ...and update_end() after the table let go of it.
        assert!(seen.munmap_ends.load(Relaxed) >= 1);
        assert_eq!(m.table().stats().entries, 0);
        assert_eq!(m.table().stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn write_fault_dirties_the_folio_read_fault_does_not() -> Result {
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)?;
        kunit_mm::write(addr, &[1])?;
        kunit_mm::write(addr + PAGE, &[2])?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        m.fault(HmmEventType::DeviceReadFault, a, a + PAGE_SIZE)?;
        m.fault(
            HmmEventType::DeviceWriteFault,
            a + PAGE_SIZE,
            a + 2 * PAGE_SIZE,
        )?;
        let w = m.table().lookup(a + PAGE_SIZE).ok_or(EFAULT)?;
        assert!(w.entry.flags().contains(PtFlags::WRITE | PtFlags::DIRTY));
        // Pin both pages so they outlive the unmap, then look at them.
        let mut pages = [core::ptr::null_mut(); 2];
        // SAFETY: `pages` has room for two pages of our own mapping.
        let pinned = unsafe { bindings::pin_user_pages_fast(addr, 2, 0, pages.as_mut_ptr()) };
        assert_eq!(pinned, 2);
        // SAFETY: Both pages are pinned.
        let before = unsafe {
            (
                shim::hmm_rs_page_dirty(pages[0]),
                shim::hmm_rs_page_dirty(pages[1]),
            )
        };
        let unmapped = kunit_mm::munmap(addr, 2 * PAGE);
        // SAFETY: As above.
        let after = unsafe {
            (
                shim::hmm_rs_page_dirty(pages[0]),
                shim::hmm_rs_page_dirty(pages[1]),
            )
        };
        // SAFETY: We pinned both above.
        unsafe { bindings::unpin_user_pages(pages.as_mut_ptr(), 2) };
        unmapped?;
        assert_eq!(before, (false, false));
        assert_eq!(after, (false, true));
        Ok(())
    }

    #[test]
    fn fault_errors() -> Result {
        let rw = kunit_mm::mmap(4 * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let ro = kunit_mm::mmap(PAGE, PROT_READ)? as u64;
        let none = kunit_mm::mmap(PAGE, PROT_NONE)? as u64;
        let (_seen, m) = mirror()?;
        let (r, w) = (
            HmmEventType::DeviceReadFault,
            HmmEventType::DeviceWriteFault,
        );
        assert_eq!(m.fault(r, rw + 1, rw + PAGE_SIZE), Err(EINVAL));
        assert_eq!(m.fault(r, rw, rw), Err(EINVAL));
        assert_eq!(m.fault(r, rw + PAGE_SIZE, rw), Err(EINVAL));
        assert_eq!(m.fault(r, rw, !(PAGE_SIZE - 1)), Err(EINVAL));
        assert_eq!(
            m.fault(HmmEventType::Munmap, rw, rw + PAGE_SIZE),
            Err(EINVAL)
        );
        // Nothing is mapped just below the first page.
        assert_eq!(m.fault(r, 0, PAGE_SIZE), Err(EFAULT));
        assert_eq!(m.fault(w, ro, ro + PAGE_SIZE), Err(EPERM));
        m.fault(r, ro, ro + PAGE_SIZE)?;
        assert_eq!(m.fault(r, none, none + PAGE_SIZE), Err(EFAULT));
        assert_eq!(m.table().stats().entries, 1);
        Ok(())
    }

    #[test]
    fn thp_is_mirrored_with_a_huge_entry() -> Result {
        // 4 MiB holds one 2 MiB-aligned region; THP is "always" in the test
        // kernel, so a write fault there gets a PMD-mapped huge page.
        let addr = kunit_mm::mmap(2 * HUGE_SIZE as usize, PROT_READ | PROT_WRITE)? as u64;
        let huge = (addr + HUGE_SIZE - 1) & !(HUGE_SIZE - 1);
        let (_seen, m) = mirror()?;
        m.fault(HmmEventType::DeviceWriteFault, huge, huge + HUGE_SIZE)?;
        let s = m.table().stats();
        assert_eq!((s.entries, s.pages), (1, 512));
        let map = m.table().lookup(huge + 5 * PAGE_SIZE).ok_or(EFAULT)?;
        assert_eq!((map.addr, map.order), (huge, HUGE_ORDER));
        // A snapshot says the CPU maps it with a 2 MiB page.
        let mut snaps = [0u32; 2];
        m.snapshot(huge, huge + 2 * PAGE_SIZE, &mut snaps)?;
        assert_eq!(snaps[1] >> snap::ORDER_SHIFT, HUGE_ORDER);
        assert_eq!(snaps[1] & snap::WRITE, snap::WRITE);
        // Unmapping one page makes the CPU split its huge page first, which
        // invalidates all 2 MiB: the mirror drops the whole entry. Faulted
        // again, what is left is mirrored with 4 KiB entries.
        kunit_mm::munmap((huge + PAGE_SIZE) as usize, PAGE)?;
        assert_eq!(m.table().stats().pages, 0);
        assert_eq!(
            m.fault(HmmEventType::DeviceWriteFault, huge, huge + HUGE_SIZE),
            Err(EFAULT)
        );
        m.fault(
            HmmEventType::DeviceWriteFault,
            huge + 2 * PAGE_SIZE,
            huge + HUGE_SIZE,
        )?;
        let s = m.table().stats();
        assert_eq!((s.entries, s.pages), (510, 510));
        assert_eq!(
            m.table().lookup(huge + 3 * PAGE_SIZE).map(|m| m.order),
            Some(0)
        );
        Ok(())
    }

    #[test]
    fn register_unregister_1000_times_leaves_nothing() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let (seen, m) = mirror()?;
        let hmm: *const crate::hmm_mm::HmmMm = m.hmm();
        for _ in 0..1000 {
            let (_s, other) = mirror()?;
            other.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
            assert!(core::ptr::eq(other.hmm(), hmm));
            assert_eq!(m.hmm().mirror_count(), 2);
        }
        assert_eq!(m.hmm().mirror_count(), 1);
        assert_eq!(m.hmm().events(HmmEventType::DeviceReadFault), 1000);
        // The survivor still works and saw none of the others' faults.
        m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        assert!(seen.events.lock().is_empty());
        Ok(())
    }

    #[test]
    fn invalidation_between_fault_in_and_commit_forces_a_retry() -> Result {
        let n = 4;
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        let (_seen, m) = mirror()?;
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        let mut bufs = FaultBufs {
            hmm_pfns: KVec::new(),
            dma_buf: KVec::new(),
        };
        // The CPU mapping is replaced between the two halves of a fault: what
        // was faulted in is stale and must not be committed.
        let w = FaultWatch::new(&m, start, end)?;
        let seq = m.fault_in(&w, start, end, true, &mut bufs.hmm_pfns)?;
        kunit_mm::remap(addr, n * PAGE)?;
        assert!(m
            .commit(&w, start, end, true, seq, &mut bufs, &mut |_, _| Ok(()))?
            .is_none());
        assert_eq!(m.table().stats().entries, 0);
        assert!(m.fault_races.load(Relaxed) >= 1);
        // With nothing in between, the same steps commit.
        let seq = m.fault_in(&w, start, end, true, &mut bufs.hmm_pfns)?;
        assert!(m
            .commit(&w, start, end, true, seq, &mut bufs, &mut |_, _| Ok(()))?
            .is_some());
        assert_eq!(m.table().stats().entries, n as u64);
        assert_eq!(stale_entries(&m, addr, n), 0);
        Ok(())
    }

    /// The racer of [`faults_racing_invalidations_leave_no_stale_entry`],
    /// and what it saw.
    struct Remapper {
        mm: *mut bindings::mm_struct,
        addr: usize,
        len: usize,
        /// The mirror faulting the range: a remap that bumps its
        /// `fault_races` invalidated one of its faults in flight.
        mirror: Arc<HmmMirror>,
        /// The racer runs.
        started: Atomic<bool>,
        /// Round the test asked for; the racer remaps once per round.
        go: Atomic<u64>,
        /// Last round the racer finished.
        done: Atomic<u64>,
        /// How long the test's last fault took, in ns: each round's remap
        /// waits another fraction of it first, to land all over a fault.
        fault_ns: Atomic<u64>,
        /// Remaps done, and remaps that failed.
        remaps: Atomic<u64>,
        remap_errors: Atomic<u64>,
        /// Remaps that invalidated a fault in flight.
        overlapped: Atomic<u64>,
    }

    /// Lets the other thread run while spinning on a flag.
    fn pause() {
        // SAFETY: Always safe in process context.
        unsafe { bindings::yield_() };
    }

    /// Remaps the range once per round, in the test's mm, until stopped.
    ///
    /// # Safety
    ///
    /// `data` is a [`Remapper`] that outlives the thread.
    unsafe extern "C" fn remap_each_round(data: *mut core::ffi::c_void) -> kernel::ffi::c_int {
        use kernel::sync::atomic::{Acquire, Release};
        use kernel::time::{Delta, Instant, Monotonic};
        // SAFETY: By the function's safety requirement.
        let r = unsafe { &*data.cast::<Remapper>() };
        // SAFETY: `r.mm` is the test's mm, alive until the test ends, which
        // is after this thread stopped.
        unsafe { bindings::kthread_use_mm(r.mm) };
        r.started.store(true, Release);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            let round = r.go.load(Acquire);
            if round == r.done.load(Relaxed) {
                pause();
                continue;
            }
            // Round k waits (13 k mod 32) / 32 of the last fault's time,
            // at most 10 ms: remaps land before, in and after the fault's
            // every step.
            let wait = (r.fault_ns.load(Relaxed) * (round * 13 % 32) / 32).min(10_000_000);
            let t = Instant::<Monotonic>::now();
            while t.elapsed() < Delta::from_nanos(wait as i64) {
                kernel::processor::cpu_relax();
            }
            // The invalidation runs its callbacks in this thread: a change
            // of `fault_races` across the remap is this remap's doing.
            let races = r.mirror.fault_races.load(Relaxed);
            match kunit_mm::remap(r.addr, r.len) {
                Ok(()) => r.remaps.add(1, Relaxed),
                Err(_) => r.remap_errors.add(1, Relaxed),
            }
            if r.mirror.fault_races.load(Relaxed) != races {
                r.overlapped.add(1, Relaxed);
            }
            r.done.store(round, Release);
        }
        // SAFETY: Paired with the `kthread_use_mm` above.
        unsafe { bindings::kthread_unuse_mm(r.mm) };
        0
    }

    /// Entries of `m` in `[addr, addr + n pages)` that are not the page the
    /// CPU maps there now.
    fn stale_entries(m: &HmmMirror, addr: usize, n: usize) -> usize {
        let mut stale = 0;
        for i in 0..n {
            let a = (addr + i * PAGE) as u64;
            let Some(map) = m.table().lookup(a) else {
                continue;
            };
            let mut page = core::ptr::null_mut();
            // SAFETY: One page of our own mapping, unpinned below.
            let pinned = unsafe { bindings::pin_user_pages_fast(a as usize, 1, 0, &mut page) };
            // SAFETY: Any PFN may be passed.
            let mirrored = unsafe { shim::hmm_rs_pfn_to_page(map.pfn_at(a) as usize) };
            if pinned != 1 || mirrored != page {
                stale += 1;
            }
            if pinned == 1 {
                // SAFETY: Pinned just above.
                unsafe { bindings::unpin_user_pages(&mut page, 1) };
            }
        }
        stale
    }

    /// Real concurrency, one remap racing one fault per round, the racer
    /// bound to another CPU than the faulting test. The window in which a
    /// missing sequence check would commit a stale entry is tiny
    /// (`hmm_range_fault` itself rechecks the sequence), so this is a smoke
    /// test; `invalidation_between_fault_in_and_commit_forces_a_retry`
    /// checks the protocol deterministically. It checks that the two did
    /// race: remaps invalidated faults in flight.
    #[test]
    fn faults_racing_invalidations_leave_no_stale_entry() -> Result {
        use crate::kunit_helpers::kunit_thread::{self, Thread};
        use kernel::sync::atomic::{Acquire, Release};
        use kernel::time::{Instant, Monotonic};
        const ROUNDS: u64 = 300;
        let n = 16;
        let cpus = kunit_thread::two_cpus("faults_racing_invalidations_leave_no_stale_entry");
        assert!(cpus.is_some());
        let Some((test_cpu, racer_cpu)) = cpus else {
            return Err(ENODEV);
        };
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        let (_seen, m) = mirror()?;
        let task = current!();
        let racer = KBox::new(
            Remapper {
                mm: task.mm().ok_or(EINVAL)?.as_raw(),
                addr,
                len: n * PAGE,
                mirror: m.clone(),
                started: Atomic::new(false),
                go: Atomic::new(0),
                done: Atomic::new(0),
                fault_ns: Atomic::new(0),
                remaps: Atomic::new(0),
                remap_errors: Atomic::new(0),
                overlapped: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let pinned = kunit_thread::pin_current(test_cpu)?;
        let data = core::ptr::from_ref::<Remapper>(&racer).cast_mut().cast();
        // SAFETY: The racer loops until stopped; `racer` outlives `thread`.
        let thread =
            unsafe { Thread::spawn_on(racer_cpu, remap_each_round, data, c"hmm_rs_remap") }?;
        // The rounds start once the racer runs, on its own CPU.
        let started = kunit_thread::wait_until(5000, || racer.started.load(Acquire));
        let (races0, retries0) = (m.fault_races.load(Relaxed), m.fault_retries.load(Relaxed));
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        let (mut faulted, mut again, mut stale) = (0u64, 0u64, 0);
        let mut result = if started { Ok(()) } else { Err(ETIMEDOUT) };
        for round in 1..=ROUNDS {
            if result.is_err() {
                break;
            }
            // One remap races one fault; then, quiescent, the mirror must
            // hold only pages the CPU maps.
            racer.go.store(round, Release);
            let t = Instant::<Monotonic>::now();
            match m.fault(HmmEventType::DeviceWriteFault, start, end) {
                Ok(()) => faulted += 1,
                Err(EAGAIN) => again += 1,
                Err(e) => result = Err(e),
            }
            let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(0);
            racer.fault_ns.store(took, Relaxed);
            if !kunit_thread::wait_until(5000, || racer.done.load(Acquire) == round) {
                result = Err(ETIMEDOUT);
                break;
            }
            stale += stale_entries(&m, addr, n);
        }
        // The racer must be gone before any assertion: a failed one ends
        // this thread at once.
        drop(thread);
        drop(pinned);
        let races = m.fault_races.load(Relaxed) - races0;
        let retries = m.fault_retries.load(Relaxed) - retries0;
        let (remaps, remap_errors) = (racer.remaps.load(Relaxed), racer.remap_errors.load(Relaxed));
        let overlapped = racer.overlapped.load(Relaxed);
        let (tcpu, rcpu) = (test_cpu.as_u32(), racer_cpu.as_u32());
        pr_info!(
            "faults_racing_invalidations: test on CPU {tcpu}, racer on CPU {rcpu}: {faulted} of \
             {ROUNDS} faults done, {again} EAGAIN; {remaps} remaps ({remap_errors} failed), \
             {overlapped} of them during a fault; fault races {races}, retries {retries}; \
             {stale} stale\n"
        );
        assert!(started);
        result?;
        // No fault left an entry of a page the CPU no longer maps.
        assert_eq!(stale, 0);
        assert!(faulted > 0);
        // The racer remapped every round, and often enough while a fault
        // was in flight, which the mirror heard as fault races.
        assert_eq!(remaps, ROUNDS);
        assert!(overlapped >= 10);
        assert!(races >= overlapped);
        Ok(())
    }

    #[test]
    fn snapshot_shows_what_the_cpu_maps_without_faulting() -> Result {
        let addr = kunit_mm::mmap(4 * PAGE, PROT_READ | PROT_WRITE)?;
        let none = kunit_mm::mmap(PAGE, PROT_NONE)? as u64;
        kunit_mm::write(addr, &[1])?;
        // Reading an untouched anonymous page maps the shared zero page.
        let mut byte = [0u8; 1];
        kernel::uaccess::UserSlice::new(kernel::uaccess::UserPtr::from_addr(addr + PAGE), 1)
            .reader()
            .read_slice(&mut byte)?;
        kunit_mm::munmap(addr + 3 * PAGE, PAGE)?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        let mut out = [0u32; 4];
        m.snapshot(a, a + 4 * PAGE_SIZE, &mut out)?;
        assert_eq!(out[0], snap::VALID | snap::WRITE);
        assert_eq!(out[1], snap::VALID | snap::ZERO);
        assert_eq!(out[2], 0);
        assert_eq!(out[3], snap::ERROR);
        let mut one = [0u32; 1];
        m.snapshot(none, none + PAGE_SIZE, &mut one)?;
        assert_eq!(one[0], snap::ERROR);
        // Nothing was faulted in or mirrored.
        assert_eq!(m.table().stats().entries, 0);
        m.snapshot(a, a + 4 * PAGE_SIZE, &mut out)?;
        assert_eq!(out[2], 0);
        assert_eq!(m.snapshot(a, a + PAGE_SIZE, &mut out), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn exclusive_access_ends_when_the_cpu_touches_the_page() -> Result {
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)?;
        kunit_mm::write(addr, &[7])?;
        kunit_mm::write(addr + PAGE, &[8])?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        m.make_exclusive(a, a + 2 * PAGE_SIZE)?;
        for (i, byte) in [7u8, 8].into_iter().enumerate() {
            let map = m.table().lookup(a + i as u64 * PAGE_SIZE).ok_or(EFAULT)?;
            assert!(map
                .entry
                .flags()
                .contains(PtFlags::EXCLUSIVE | PtFlags::WRITE));
            assert_eq!(first_byte(map.pfn_at(map.addr)), byte);
        }
        // The CPU writes the first page: its exclusive entry goes.
        kunit_mm::write(addr, &[9])?;
        assert!(m.table().lookup(a).is_none());
        assert!(m.table().lookup(a + PAGE_SIZE).is_some());
        // Read-only memory cannot be made exclusive.
        let ro = kunit_mm::mmap(PAGE, PROT_READ)? as u64;
        assert!(m.make_exclusive(ro, ro + PAGE_SIZE).is_err());
        assert_eq!(m.make_exclusive(a + 1, a + PAGE_SIZE), Err(EINVAL));
        Ok(())
    }

    /// A device that cannot be stopped without sleeping.
    struct SleepsToStop;

    impl MirrorOps for SleepsToStop {
        fn update(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            blockable: bool,
        ) -> Result<Update> {
            if blockable {
                Ok(Update::Done)
            } else {
                Err(EAGAIN)
            }
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// The OOM reaper's kind of invalidation (it cannot block) cannot be
    /// triggered from a test, so the core's callback is called directly.
    #[test]
    fn non_blockable_invalidations_ask_for_a_retry_instead_of_sleeping() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let m = HmmMirror::register(mm, Owner::NONE, KBox::new(SleepsToStop, GFP_KERNEL)?)?;
        m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        let mut range = bindings::mmu_notifier_range {
            mm: mm.as_raw(),
            start: addr as usize,
            end: (addr + PAGE_SIZE) as usize,
            flags: 0,
            event: bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
            owner: core::ptr::null_mut(),
        };
        // `HmmMm` starts with its notifier.
        let notifier = core::ptr::from_ref(m.hmm()).cast_mut().cast();
        let busy = m.hmm().mirrors.lock();
        // SAFETY: Our live notifier and a valid range of its mm.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(notifier, &range) };
        drop(busy);
        // The mirror list was busy: a retry, not a wait.
        assert_eq!(ret, EAGAIN.to_errno());
        // SAFETY: As above.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(notifier, &range) };
        // The driver asked for a retry: the mirror keeps its entry.
        assert_eq!(ret, EAGAIN.to_errno());
        assert!(m.table().lookup(addr).is_some());
        range.flags = bindings::MMU_NOTIFIER_RANGE_BLOCKABLE;
        // SAFETY: As above.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, 0);
        assert!(m.table().lookup(addr).is_none());
        Ok(())
    }

    /// What one of several two-pass devices saw: (which device, the pass:
    /// 0 update, 1 update_finish, 2 update_end, whether its table still
    /// held the event's start).
    type PassLog = Arc<SpinLock<KVec<(u8, u8, bool)>>>;

    /// A device that records the passes it is taken through; `pending`:
    /// its update() answers pending; `stuck`: its update_finish() cannot
    /// finish without sleeping.
    struct TwoPass {
        id: u8,
        pending: bool,
        stuck: bool,
        log: PassLog,
    }

    impl TwoPass {
        fn note(&self, mirror: &HmmMirror, event: &HmmEvent, pass: u8) -> Result {
            let held = mirror.table().lookup(event.start).is_some();
            self.log.lock().push((self.id, pass, held), GFP_ATOMIC)?;
            Ok(())
        }
    }

    impl MirrorOps for TwoPass {
        fn update(&self, mirror: &HmmMirror, event: &HmmEvent, _blockable: bool) -> Result<Update> {
            self.note(mirror, event, 0)?;
            Ok(if self.pending {
                Update::Pending
            } else {
                Update::Done
            })
        }

        fn update_finish(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result {
            self.note(mirror, event, 1)?;
            if self.stuck && !blockable {
                return Err(EAGAIN);
            }
            Ok(())
        }

        fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
            let _ = self.note(mirror, event, 2);
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// Mirrors of the current mm with `TwoPass` devices: (pending, stuck)
    /// for each, all holding `[addr, addr + PAGE)`.
    fn two_pass_mirrors(
        addr: u64,
        devices: &[(bool, bool)],
        log: &PassLog,
    ) -> Result<KVec<Arc<HmmMirror>>> {
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mut mirrors = KVec::new();
        for (id, &(pending, stuck)) in devices.iter().enumerate() {
            let ops = TwoPass {
                id: id as u8,
                pending,
                stuck,
                log: log.clone(),
            };
            let m = HmmMirror::register(mm, Owner::NONE, KBox::new(ops, GFP_KERNEL)?)?;
            m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
            mirrors.push(m, GFP_KERNEL)?;
        }
        Ok(mirrors)
    }

    #[test]
    fn invalidations_start_every_device_then_wait_then_change_the_tables() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let log: PassLog = Arc::pin_init(new_spinlock!(KVec::new()), GFP_KERNEL)?;
        // Devices 0 and 2 finish in a second pass, 1 at once.
        let mirrors =
            two_pass_mirrors(addr, &[(true, false), (false, false), (true, false)], &log)?;
        log.lock().clear();
        kunit_mm::munmap(addr as usize, PAGE)?;
        let seen = core::mem::take(&mut *log.lock());
        // Device 1, done at once, is applied at once; 0 and 2 are waited
        // for after both started, and keep their entries until then.
        let want = [
            (0, 0, true),
            (1, 0, true),
            (1, 2, false),
            (2, 0, true),
            (0, 1, true),
            (2, 1, true),
            (0, 2, false),
            (2, 2, false),
        ];
        assert_eq!(&seen[..], &want[..]);
        assert_eq!(mirrors[0].hmm().two_pass.load(Relaxed), 1);
        Ok(())
    }

    #[test]
    fn a_device_that_cannot_finish_without_sleeping_keeps_its_entries() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let log: PassLog = Arc::pin_init(new_spinlock!(KVec::new()), GFP_KERNEL)?;
        // Device 1 is pending and cannot finish without sleeping.
        let mirrors = two_pass_mirrors(addr, &[(true, false), (true, true)], &log)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mut range = bindings::mmu_notifier_range {
            mm: mm.as_raw(),
            start: addr as usize,
            end: (addr + PAGE_SIZE) as usize,
            flags: 0,
            event: bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
            owner: core::ptr::null_mut(),
        };
        let notifier = core::ptr::from_ref(mirrors[0].hmm()).cast_mut().cast();
        log.lock().clear();
        // SAFETY: Our live notifier and a valid range of its mm.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, EAGAIN.to_errno());
        // Device 0 finished and lost its entry; device 1 keeps its own, and
        // both were told the invalidation ended.
        assert!(mirrors[0].table().lookup(addr).is_none());
        assert!(mirrors[1].table().lookup(addr).is_some());
        let ends = log.lock().iter().filter(|e| e.1 == 2).count();
        assert_eq!(ends, 2);
        // Blockable, it goes through.
        range.flags = bindings::MMU_NOTIFIER_RANGE_BLOCKABLE;
        // SAFETY: As above.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, 0);
        assert!(mirrors[1].table().lookup(addr).is_none());
        Ok(())
    }

    /// How far a [`SlowFinish`] device got: in `update_finish` (1), out of
    /// it (2).
    type FinishState = Arc<Atomic<u64>>;

    /// A device whose `update_finish` takes 200 ms.
    struct SlowFinish(FinishState);

    impl MirrorOps for SlowFinish {
        fn update(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            _blockable: bool,
        ) -> Result<Update> {
            Ok(Update::Pending)
        }

        fn update_finish(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            _blockable: bool,
        ) -> Result {
            self.0.store(1, Relaxed);
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(200));
            self.0.store(2, Relaxed);
            Ok(())
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// One blockable munmap invalidation of `range`, run on a kthread.
    struct Invalidator {
        notifier: *mut bindings::mmu_notifier,
        range: bindings::mmu_notifier_range,
        /// 1 once it returned 0, 2 once it returned an error.
        result: Atomic<u64>,
    }

    /// Runs the invalidation once, then waits to be stopped.
    ///
    /// # Safety
    ///
    /// `data` is an [`Invalidator`] of a live notifier, valid until the
    /// thread is stopped.
    unsafe extern "C" fn invalidate_once(data: *mut core::ffi::c_void) -> kernel::ffi::c_int {
        // SAFETY: By the caller's guarantee.
        let inv = unsafe { &*data.cast::<Invalidator>() };
        // SAFETY: A live notifier and a valid range of its mm.
        let ret = unsafe { crate::hmm_mm::hmm_invalidate_range_start(inv.notifier, &inv.range) };
        inv.result.store(if ret == 0 { 1 } else { 2 }, Relaxed);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            pause();
        }
        0
    }

    #[test]
    fn a_mirror_registered_during_an_invalidation_waits_for_its_passes() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let state: FinishState = Arc::new(Atomic::new(0), GFP_KERNEL)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let ops = KBox::new(SlowFinish(state.clone()), GFP_KERNEL)?;
        let slow = HmmMirror::register(mm, Owner::NONE, ops)?;
        slow.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        let inv = KBox::new(
            Invalidator {
                notifier: core::ptr::from_ref(slow.hmm()).cast_mut().cast(),
                range: bindings::mmu_notifier_range {
                    mm: mm.as_raw(),
                    start: addr as usize,
                    end: (addr + PAGE_SIZE) as usize,
                    flags: bindings::MMU_NOTIFIER_RANGE_BLOCKABLE,
                    event: bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
                    owner: core::ptr::null_mut(),
                },
                result: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let data = core::ptr::from_ref::<Invalidator>(&inv).cast_mut().cast();
        // SAFETY: The thread waits to be stopped; `inv` outlives `thread`.
        let thread = unsafe {
            crate::kunit_helpers::kunit_thread::Thread::spawn(
                invalidate_once,
                data,
                c"hmm_rs_inval",
            )
        }?;
        while state.load(Relaxed) == 0 {
            pause();
        }
        // The invalidation is in its second pass, the mirror list locked: a
        // new mirror waits for its passes to end, and is not part of it.
        let (seen, _late) = mirror()?;
        let after_finish = state.load(Relaxed);
        let told = seen.events.lock().len();
        assert_eq!(after_finish, 2);
        assert_eq!(told, 0);
        while inv.result.load(Relaxed) == 0 {
            pause();
        }
        drop(thread);
        assert_eq!(inv.result.load(Relaxed), 1);
        assert!(slow.table().lookup(addr).is_none());
        Ok(())
    }

    #[test]
    fn stats_show_the_mirror_and_its_mm() -> Result {
        use core::fmt::Write;
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let (_seen, m) = mirror()?;
        m.fault(HmmEventType::DeviceReadFault, addr, addr + 2 * PAGE_SIZE)?;
        let mut text = crate::debugfs::TextBuf(KVec::new());
        write_stats(&mut text).map_err(|_| ENOMEM)?;
        let text = core::str::from_utf8(&text.0).map_err(|_| EINVAL)?;
        let mut want = crate::debugfs::TextBuf(KVec::new());
        write!(want, "mirror {}: entries 2 pages 2 ", m.id).map_err(|_| ENOMEM)?;
        let want = core::str::from_utf8(&want.0).map_err(|_| EINVAL)?;
        assert!(text.contains(want));
        assert!(text.contains(" faults 1 "));
        assert!(text.contains(" device_read_fault 1 "));
        Ok(())
    }

    #[test]
    fn mirrors_of_one_mm_share_its_notifier() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)?;
        let (seen1, m1) = mirror()?;
        let (seen2, m2) = mirror()?;
        assert!(core::ptr::eq(m1.hmm(), m2.hmm()));
        assert_eq!(m1.hmm().mirror_count(), 2);
        kunit_mm::munmap(addr, PAGE)?;
        for seen in [&seen1, &seen2] {
            let told = seen
                .events
                .lock()
                .iter()
                .any(|e| e.0 == HmmEventType::Munmap);
            assert!(told);
        }
        drop(m2);
        assert_eq!(m1.hmm().mirror_count(), 1);
        Ok(())
    }
}
