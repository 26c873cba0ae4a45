// SPDX-License-Identifier: GPL-2.0

//! The mirror's edge to mm: `mmu_interval_notifier`s (the mirror's own, over
//! all of user space, and one per device fault over its range), the walk
//! under their sequence, `mmap_lock`, and the hmm pfns the walk returns.
//! The mirror's algorithms call these as safe Rust.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h),
//! [`include/linux/hmm.h`](srctree/include/linux/hmm.h).

use core::{
    marker::PhantomData,
    ptr::{null_mut, NonNull},
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{bindings, error::to_result, ffi::c_ulong, mm::MmWithUser, prelude::*, types::Opaque};

use super::{devmem::Owner, HmmMirror};
use crate::{hmm_pt::PAGE_SIZE, shim, stats};
use kernel::sync::atomic::Relaxed;

/// An interval notifier's sequence, as read before a walk.
pub(super) type Seq = c_ulong;

/// What an [`Interval`] watches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Watches {
    /// All of the mirror's user space (snapshots, exclusive access,
    /// migration).
    Mirror,
    /// One device fault's range: an invalidation of it is a fault race.
    Fault,
}

/// `hmm_range_fault()`'s request for each page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// Only what the CPU maps now (a snapshot).
    Nothing,
    /// The page, faulted in for reading.
    Read,
    /// The page, faulted in for writing.
    Write,
}

/// One `mmu_interval_notifier` of a mirror. An invalidation that overlaps
/// it sets its sequence under the mirror's table lock, which what it
/// guards commits under. Only ever pinned: built by [`Interval::new`].
///
/// # Invariants
///
/// While `mirror` is not null, `interval_sub` is inserted with [`INTERVAL_OPS`] in
/// the mm of that mirror, which outlives the insertion.
#[pin_data(PinnedDrop)]
pub(super) struct Interval {
    #[pin]
    interval_sub: Opaque<bindings::mmu_interval_notifier>,
    mirror: AtomicPtr<HmmMirror>,
    watches: Watches,
}

// SAFETY: `interval_sub` is only touched by mm and through its address, which mm
// synchronises; the rest is atomic or immutable.
unsafe impl Sync for Interval {}
// SAFETY: As above; removal may happen from any process context.
unsafe impl Send for Interval {}

/// The callbacks of every [`Interval`].
static INTERVAL_OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
    invalidate: Some(interval_invalidate),
    // SAFETY: The other members are optional callbacks; null is "none".
    ..unsafe { core::mem::zeroed() }
};

/// An invalidation is starting: bump the sequence under the mirror's table
/// lock, so that a commit under that lock sees it.
///
/// # Safety
///
/// Called by mm for an inserted [`Interval`].
unsafe extern "C" fn interval_invalidate(
    interval_sub: *mut bindings::mmu_interval_notifier,
    _range: *const bindings::mmu_notifier_range,
    cur_seq: c_ulong,
) -> bool {
    // SAFETY: `interval_sub` is the `interval_sub` field of a live `Interval`:
    // `mmu_interval_notifier_remove` waits for this callback before the
    // interval is freed.
    let interval = unsafe {
        &*kernel::container_of!(
            interval_sub.cast::<Opaque<bindings::mmu_interval_notifier>>(),
            Interval,
            interval_sub
        )
    };
    // SAFETY: Inserted, so the mirror is set and alive (type invariant).
    let mirror = unsafe { &*interval.mirror.load(Ordering::Acquire) };
    if interval.watches == Watches::Fault {
        mirror.fault_races.add(1, Relaxed);
        stats::FAULT_RACES.add(1);
    }
    let _table = mirror.pt.lock();
    // SAFETY: We are its invalidate callback, under the lock commits take.
    unsafe { shim::hmm_rs_interval_set_seq(interval_sub, cur_seq) };
    true
}

impl Interval {
    /// A notifier not inserted yet.
    pub(super) fn new(watches: Watches) -> impl PinInit<Self> {
        pin_init!(Self {
            interval_sub: Opaque::uninit(),
            mirror: AtomicPtr::new(null_mut()),
            watches,
        })
    }

    /// Inserts the notifier over all of `mm`'s user space for `mirror`.
    /// May sleep.
    ///
    /// # Safety
    ///
    /// The interval is a field of `mirror`, whose mm is `mm`, and is not
    /// inserted yet.
    pub(super) unsafe fn insert_all(&self, mirror: &HmmMirror, mm: &MmWithUser) -> Result {
        // The callback may run as soon as it is inserted.
        self.mirror
            .store(NonNull::from(mirror).as_ptr(), Ordering::Release);
        // SAFETY: `interval_sub` is pinned (an `Interval` only exists
        // pinned) and not inserted (caller's guarantee); the ops are static;
        // `mm` has users.
        let r = to_result(unsafe {
            shim::hmm_rs_interval_insert(self.interval_sub.get(), mm.as_raw(), &INTERVAL_OPS)
        });
        if r.is_err() {
            self.mirror.store(null_mut(), Ordering::Relaxed);
        }
        // INVARIANT: inserted for `mirror`, whose field it is, or not at all.
        r
    }

    /// Inserts the notifier over `[start, end)` of `mirror`'s mm. `ESRCH`
    /// once the mm is exiting. May sleep.
    ///
    /// # Safety
    ///
    /// The interval must be dropped before `mirror` is.
    pub(super) unsafe fn insert_range(&self, mirror: &HmmMirror, start: u64, end: u64) -> Result {
        self.mirror
            .store(NonNull::from(mirror).as_ptr(), Ordering::Release);
        // SAFETY: `interval_sub` is pinned and not inserted; the ops are static; the
        // mirror's own notifier is inserted (type invariant of `HmmMirror`)
        // and names the mm.
        let r = to_result(unsafe {
            shim::hmm_rs_interval_insert_range(
                self.interval_sub.get(),
                mirror.interval.interval_sub.get(),
                start as usize,
                end as usize,
                &INTERVAL_OPS,
            )
        });
        if r.is_err() {
            self.mirror.store(null_mut(), Ordering::Relaxed);
        }
        // INVARIANT: inserted for `mirror`, which outlives it by the caller's
        // guarantee, or not at all.
        r
    }

    /// The address of the C notifier, for the shim calls that walk or lock
    /// its mm; `EINVAL` if it is not inserted.
    fn raw(&self) -> Result<*mut bindings::mmu_interval_notifier> {
        if self.mirror.load(Ordering::Relaxed).is_null() {
            return Err(EINVAL);
        }
        Ok(self.interval_sub.get())
    }

    /// The sequence now, to commit under later. Sleeps until no
    /// invalidation of the interval is running.
    pub(super) fn read_begin(&self) -> Result<Seq> {
        let sub = self.raw()?;
        // SAFETY: Inserted (checked by `raw`), so it stays inserted while
        // `&self` lives: it is removed only when dropped.
        Ok(unsafe { shim::hmm_rs_interval_read_begin(sub) })
    }

    /// Whether an invalidation started since `seq` was read: what was read
    /// under it is stale. Called under the mirror's table lock.
    /// Not inserted: nothing read under it can be trusted.
    pub(super) fn read_retry(&self, seq: Seq) -> bool {
        let Ok(sub) = self.raw() else {
            return true;
        };
        // SAFETY: Inserted (as in `read_begin`).
        unsafe { shim::hmm_rs_interval_read_retry(sub, seq) }
    }

    /// `hmm_range_fault()` of `[start, end)` into `hmm_pfns` (one zeroed slot
    /// per page) under this notifier's sequence, which it returns. Device
    /// pages of `owner` come as they are. `EBUSY`: an invalidation raced;
    /// `ESRCH`: the mm is exiting; `EINTR`: a fatal signal. May sleep.
    pub(super) fn range_fault(
        &self,
        start: u64,
        end: u64,
        hmm_pfns: &mut [c_ulong],
        want: Want,
        owner: Owner,
    ) -> Result<Seq> {
        // `hmm_rs_range_fault()` modes (hmm_shim.h).
        let how = match want {
            Want::Nothing => 0,
            Want::Read => 1,
            Want::Write => 1 | 2,
        };
        if hmm_pfns.len() as u64 != (end - start) / PAGE_SIZE {
            return Err(EINVAL);
        }
        let sub = self.raw()?;
        let mut seq = 0;
        // SAFETY: Inserted (as in `read_begin`); `hmm_pfns` holds one
        // initialised slot per page of the range.
        to_result(unsafe {
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

    /// Takes the mm's `mmap_lock` for reading, with a reference on the mm:
    /// `ESRCH` once the mm is exiting. Must be inserted. May sleep.
    pub(super) fn lock_mm(&self) -> Result<MmReadLock<'_>> {
        let sub = self.raw()?;
        // SAFETY: Inserted (as in `read_begin`).
        to_result(unsafe { shim::hmm_rs_mm_lock(sub) })?;
        // INVARIANT: locked just above.
        Ok(MmReadLock {
            sub,
            _interval: PhantomData,
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Interval {
    fn drop(self: Pin<&mut Self>) {
        if !self.mirror.load(Ordering::Relaxed).is_null() {
            // SAFETY: Inserted (type invariant); this waits for running
            // callbacks, so none is left when the interval is freed.
            unsafe { bindings::mmu_interval_notifier_remove(self.interval_sub.get()) };
        }
    }
}

/// The mm of an [`Interval`], referenced, with `mmap_lock` held for reading.
///
/// # Invariants
///
/// `sub` is the inserted notifier of the [`Interval`] borrowed for `'a`
/// (so it stays inserted); `hmm_rs_mm_lock()` of it succeeded and is
/// undone on drop.
pub(super) struct MmReadLock<'a> {
    sub: *mut bindings::mmu_interval_notifier,
    _interval: PhantomData<&'a Interval>,
}

impl MmReadLock<'_> {
    /// The notifier naming the locked mm, for shim calls that need
    /// `mmap_lock` held.
    pub(super) fn interval_sub(&self) -> *mut bindings::mmu_interval_notifier {
        self.sub
    }

    /// Makes the page at `addr` exclusive to the device `owner`
    /// (`make_device_exclusive()`): the CPU faults to touch it again, which
    /// takes the access back. The page's folio stays locked until the
    /// returned value drops.
    pub(super) fn make_exclusive(
        &self,
        addr: u64,
        owner: *mut core::ffi::c_void,
    ) -> Result<ExclusivePage> {
        let mut folio = null_mut();
        // SAFETY: We hold the mm's `mmap_lock` (type invariant); `owner` is
        // only compared.
        let pfn = unsafe {
            shim::hmm_rs_make_exclusive(self.interval_sub(), addr as usize, owner, &mut folio)
        };
        if pfn < 0 {
            return Err(Error::from_errno(pfn as i32));
        }
        // INVARIANT: `hmm_rs_make_exclusive()` locked and referenced it.
        Ok(ExclusivePage {
            pfn: pfn as u64,
            folio,
        })
    }
}

/// A page made exclusive to a device, its folio locked and referenced.
///
/// # Invariants
///
/// `folio` came from `hmm_rs_make_exclusive()`, which locked it.
pub(super) struct ExclusivePage {
    pfn: u64,
    folio: *mut bindings::folio,
}

impl ExclusivePage {
    /// The page frame number.
    pub(super) fn pfn(&self) -> u64 {
        self.pfn
    }
}

impl Drop for ExclusivePage {
    fn drop(&mut self) {
        // SAFETY: Locked and referenced by `hmm_rs_make_exclusive` (type
        // invariant); unlocked and put once, here.
        unsafe { shim::hmm_rs_exclusive_done(self.folio) };
    }
}

/// Whether the current task got a fatal signal: long loops stop on it.
pub(super) fn fatal_signal_pending() -> bool {
    // SAFETY: No preconditions.
    unsafe { shim::hmm_rs_fatal_signal_pending() }
}

impl Drop for MmReadLock<'_> {
    fn drop(&mut self) {
        // SAFETY: Locked by `Interval::lock_mm` (type invariant).
        unsafe { shim::hmm_rs_mm_unlock(self.sub) };
    }
}

/// The flag bits of hmm pfns, read once per walk from the shim's
/// constants (`HMM_PFN_*` are not in `bindings`).
#[derive(Clone, Copy)]
pub(super) struct PfnBits {
    flags: c_ulong,
    write: c_ulong,
    error: c_ulong,
}

impl PfnBits {
    /// The kernel's `HMM_PFN_*` bits.
    pub(super) fn get() -> Self {
        // SAFETY: Constants the shim defines and never changes.
        unsafe {
            Self {
                flags: shim::hmm_rs_pfn_flags,
                write: shim::hmm_rs_pfn_write,
                error: shim::hmm_rs_pfn_error,
            }
        }
    }

    /// The page frame number of `raw`.
    pub(super) fn pfn(self, raw: c_ulong) -> c_ulong {
        raw & !self.flags
    }

    /// Whether `raw` may be written.
    pub(super) fn writable(self, raw: c_ulong) -> bool {
        raw & self.write != 0
    }

    /// Whether `raw` could not be faulted in.
    pub(super) fn error(self, raw: c_ulong) -> bool {
        raw & self.error != 0
    }
}

/// The order of the CPU mapping of `raw`, an hmm pfn: 9 for a PMD.
pub(super) fn pfn_order(raw: c_ulong) -> u32 {
    // SAFETY: Pure arithmetic on the value.
    unsafe { shim::hmm_rs_pfn_order(raw) }
}

/// Whether `pfn` is a device-private page.
pub(super) fn pfn_is_device_private(pfn: c_ulong) -> bool {
    // SAFETY: Any PFN may be passed.
    unsafe { shim::hmm_rs_pfn_is_device_private(pfn) }
}
