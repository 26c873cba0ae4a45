// SPDX-License-Identifier: GPL-2.0

//! The HMM state of an mm ([`HmmMm`]): its one `mmu_notifier`, shared by
//! every mirror of the mm, which turns each CPU page-table change into an
//! [`HmmEvent`] and takes the mm's mirrors through it in three passes.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).

use core::ptr::NonNull;
use kernel::{
    bindings,
    mm::MmWithUser,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        new_mutex, Mutex,
    },
    time::{Delta, Instant, Monotonic},
    types::Opaque,
};

use crate::{
    hmm_event::{HmmEvent, HmmEventType, Invalidation, NotifierEvent},
    hmm_mirror::{HmmMirror, Update},
    shim, trace,
};

/// How many [`HmmMm`] exist: each holds one registered `mmu_notifier`.
static LIVE_MMS: Atomic<u64> = Atomic::new(0);

/// Numbers [`HmmMm`]s for debugfs.
static NEXT_MM_ID: Atomic<u64> = Atomic::new(1);

/// Over all mms so far, by [`HmmEventType`] value (debugfs).
static ALL_EVENTS: [Atomic<u64>; HmmEventType::ALL.len() + 1] =
    [const { Atomic::new(0) }; HmmEventType::ALL.len() + 1];

/// The debugfs line of [`ALL_EVENTS`].
pub(crate) fn write_event_stats(f: &mut impl core::fmt::Write) -> core::fmt::Result {
    write!(f, "events")?;
    for ty in HmmEventType::ALL {
        write!(
            f,
            " {} {}",
            ty.name(),
            ALL_EVENTS[ty as usize].load(Relaxed)
        )?;
    }
    writeln!(f)
}

/// The HMM state of one mm: its one `mmu_notifier`, shared by every mirror of
/// the mm, created with the first [`HmmMmRef`] and freed after the last is
/// dropped (`mmu_notifier_get`/`mmu_notifier_put`), once SRCU readers of the
/// notifier list are done.
///
/// # Invariants
///
/// `notifier` was returned by [`hmm_alloc_notifier`] for a `KBox<HmmMm>`
/// and is registered with its mm with [`HMM_OPS`] until `free_notifier`.
#[pin_data]
#[repr(C)]
pub(crate) struct HmmMm {
    // First, so that a notifier pointer is a pointer to its `HmmMm`.
    #[pin]
    notifier: Opaque<bindings::mmu_notifier>,
    /// Invalidations seen, by [`HmmEventType`] value (index 0 unused).
    events: [Atomic<u64>; HmmEventType::ALL.len() + 1],
    /// Invalidations that could not block.
    nonblocking: Atomic<u64>,
    /// Invalidations in which some device was waited for in a second pass,
    /// and the time spent waiting.
    two_pass: Atomic<u64>,
    wait_ns: Atomic<u64>,
    /// Number for debugfs.
    id: u64,
    /// The mirrors of the mm, each alive while listed (see [`HmmMirror`]).
    /// Nothing allocates while holding the lock, so reclaim never waits on it.
    #[pin]
    mirrors: Mutex<KVec<NonNull<HmmMirror>>>,
}

impl HmmMm {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            notifier: Opaque::uninit(),
            events: [const { Atomic::new(0) }; HmmEventType::ALL.len() + 1],
            nonblocking: Atomic::new(0),
            two_pass: Atomic::new(0),
            wait_ns: Atomic::new(0),
            id: NEXT_MM_ID.fetch_add(1, Relaxed),
            mirrors <- new_mutex!(KVec::new()),
        })
    }

    /// # Safety
    ///
    /// `notifier` must be the `notifier` field of a live [`HmmMm`].
    unsafe fn from_notifier<'a>(notifier: *mut bindings::mmu_notifier) -> &'a Self {
        // SAFETY: `notifier` is the first field of a `#[repr(C)]` `HmmMm`
        // that is live, by the caller's guarantee; `Opaque` is transparent.
        unsafe { &*notifier.cast::<Self>() }
    }

    /// The mm's number in debugfs and traces.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Invalidations of type `ty` seen so far.
    pub(crate) fn events(&self, ty: HmmEventType) -> u64 {
        self.events[ty as usize].load(Relaxed)
    }

    pub(crate) fn count(&self, ty: HmmEventType) {
        self.events[ty as usize].add(1, Relaxed);
        ALL_EVENTS[ty as usize].add(1, Relaxed);
    }

    /// The mm's debugfs line.
    pub(crate) fn write_stats(&self, f: &mut impl core::fmt::Write) -> core::fmt::Result {
        write!(
            f,
            "    mm {}: mirrors {} nonblocking {} two_pass {} device_wait_us {}",
            self.id,
            self.mirror_count(),
            self.nonblocking.load(Relaxed),
            self.two_pass.load(Relaxed),
            self.wait_ns.load(Relaxed) / 1000
        )?;
        for ty in HmmEventType::ALL {
            write!(f, " {} {}", ty.name(), self.events(ty))?;
        }
        writeln!(f)
    }

    /// Lists a mirror, growing the list outside the lock. May sleep.
    pub(crate) fn add_mirror(&self, mirror: NonNull<HmmMirror>) -> Result {
        loop {
            let mut list = self.mirrors.lock();
            if list.push_within_capacity(mirror).is_ok() {
                return Ok(());
            }
            let want = list.capacity() * 2 + 4;
            drop(list);
            let mut bigger = KVec::with_capacity(want, GFP_KERNEL)?;
            let mut list = self.mirrors.lock();
            if bigger.capacity() > list.len() {
                for m in list.iter() {
                    // Cannot fail: `bigger` has room for all of them.
                    let _ = bigger.push_within_capacity(*m);
                }
                *list = bigger;
            }
        }
    }

    /// Unlists a mirror; it gets no invalidation after this returns.
    pub(crate) fn remove_mirror(&self, mirror: NonNull<HmmMirror>) {
        let mut list = self.mirrors.lock();
        if let Some(i) = list.iter().position(|m| *m == mirror) {
            // In bounds: `i` was just found.
            let _ = list.remove(i);
        }
    }

    /// How many mirrors the mm has.
    pub(crate) fn mirror_count(&self) -> usize {
        self.mirrors.lock().len()
    }
}

/// A counted reference to the [`HmmMm`] of an mm.
///
/// # Invariants
///
/// `self.0` holds one `mmu_notifier_get` reference on the notifier of a live
/// [`HmmMm`].
pub(crate) struct HmmMmRef(NonNull<HmmMm>);

// SAFETY: The reference can be dropped (`mmu_notifier_put`) from any task.
unsafe impl Send for HmmMmRef {}
// SAFETY: `HmmMm` has atomics, a mutex, and the notifier, which mm syncs.
unsafe impl Sync for HmmMmRef {}

impl HmmMmRef {
    /// The [`HmmMm`] of `mm`, created if it has none. Takes `mmap_lock` for
    /// writing and allocates with `GFP_KERNEL`: may sleep.
    pub(crate) fn get(mm: &MmWithUser) -> Result<Self> {
        // SAFETY: `HMM_OPS` is static; `mm` has users (`MmWithUser`), which
        // `mmu_notifier_get` requires.
        let notifier = unsafe { shim::hmm_rs_mmu_notifier_get(&HMM_OPS, mm.as_raw()) };
        kernel::error::from_err_ptr(notifier)?;
        // INVARIANT: `mmu_notifier_get` returned a counted reference to a
        // notifier with `HMM_OPS`, which only `hmm_alloc_notifier` creates.
        Ok(Self(NonNull::new(notifier.cast()).ok_or(ENOMEM)?))
    }
}

impl core::ops::Deref for HmmMmRef {
    type Target = HmmMm;

    fn deref(&self) -> &HmmMm {
        // SAFETY: By the type invariant, the `HmmMm` lives while we hold the
        // reference.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for HmmMmRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold one reference, given up here.
        unsafe { bindings::mmu_notifier_put(self.0.as_ptr().cast()) };
    }
}

/// The notifier operations of every [`HmmMm`]; `mmu_notifier_get` finds an
/// mm's notifier by this address.
static HMM_OPS: bindings::mmu_notifier_ops = bindings::mmu_notifier_ops {
    release: Some(hmm_release),
    invalidate_range_start: Some(hmm_invalidate_range_start),
    alloc_notifier: Some(hmm_alloc_notifier),
    free_notifier: Some(hmm_free_notifier),
    // SAFETY: The remaining members are optional callbacks; null is "none".
    ..unsafe { core::mem::zeroed() }
};

/// `alloc_notifier`: a new [`HmmMm`] for an mm that has none.
///
/// # Safety
///
/// Called by `mmu_notifier_get_locked` only.
unsafe extern "C" fn hmm_alloc_notifier(
    _mm: *mut bindings::mm_struct,
) -> *mut bindings::mmu_notifier {
    match KBox::pin_init(HmmMm::new(), GFP_KERNEL) {
        Ok(hmm) => {
            LIVE_MMS.add(1, Relaxed);
            // SAFETY: The box is given up to the notifier list; it is never
            // moved, and `hmm_free_notifier` turns it back into a box.
            let hmm = KBox::into_raw(unsafe { Pin::into_inner_unchecked(hmm) });
            // SAFETY: `hmm` is valid; the notifier is its first field.
            unsafe { (*hmm).notifier.get() }
        }
        Err(e) => e.to_ptr(),
    }
}

/// `free_notifier`: the last reference is gone and SRCU readers are done.
///
/// # Safety
///
/// `notifier` came from [`hmm_alloc_notifier`]; called once, by mm.
unsafe extern "C" fn hmm_free_notifier(notifier: *mut bindings::mmu_notifier) {
    // SAFETY: `notifier` is the first field of the `HmmMm` that
    // `hmm_alloc_notifier` leaked from a `KBox`. (This runs from an SRCU
    // callback with bottom halves off: it must not sleep.)
    drop(unsafe { KBox::from_raw(notifier.cast::<HmmMm>()) });
    LIVE_MMS.fetch_sub(1, Release);
}

/// Waits until at most `target` [`HmmMm`]s are left, for at most `limit`;
/// returns whether that happened.
///
/// `mmu_notifier_synchronize()` is only `synchronize_srcu()`: it ends a
/// grace period, but the `free_notifier` callbacks it made ready may still
/// be queued or running on another CPU when it returns. So count them.
pub(crate) fn wait_for_freed_notifiers(target: u64, limit: Delta) -> bool {
    let start = Instant::<Monotonic>::now();
    loop {
        // SAFETY: Process context (callers sleep).
        unsafe { bindings::mmu_notifier_synchronize() };
        if LIVE_MMS.load(Acquire) <= target {
            // The last callback may still be returning into our text, with
            // bottom halves off: a normal RCU grace period waits that out.
            // SAFETY: Process context.
            unsafe { bindings::synchronize_rcu() };
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        kernel::time::delay::fsleep(Delta::from_millis(1));
    }
}

/// `invalidate_range_start`: the CPU page table of the range is changing.
///
/// # Safety
///
/// Called by mm with a live notifier of ours and a valid `range`.
unsafe extern "C" fn hmm_invalidate_range_start(
    notifier: *mut bindings::mmu_notifier,
    range: *const bindings::mmu_notifier_range,
) -> core::ffi::c_int {
    // SAFETY: mm calls us with our live notifier and a valid range.
    let (hmm, r) = unsafe { (HmmMm::from_notifier(notifier), &*range) };
    // SAFETY: `range` is valid.
    let (blockable, forking, stays_readable) = unsafe {
        (
            shim::hmm_rs_range_blockable(range),
            shim::hmm_rs_range_in_fork(range),
            shim::hmm_rs_range_stays_readable(range),
        )
    };
    let inv = Invalidation {
        event: NotifierEvent::from_raw(r.event),
        forking,
        stays_readable,
    };
    let event = HmmEvent::from_invalidation(&inv, r.start as u64, r.end as u64);
    hmm.count(event.ty);
    let mirrors = if blockable {
        Some(hmm.mirrors.lock())
    } else {
        hmm.nonblocking.add(1, Relaxed);
        hmm.mirrors.try_lock()
    };
    // Only a non-blockable invalidation may fail, and only with EAGAIN.
    let Some(mirrors) = mirrors else {
        trace::invalidate(hmm.id, r.event, &event, blockable, 0);
        return EAGAIN.to_errno();
    };
    trace::invalidate(hmm.id, r.event, &event, blockable, mirrors.len());
    // Three passes (see `MirrorOps`): every device starts (those done at
    // once are applied at once), the pending ones are waited for, then
    // their tables change. Which mirror is where is kept in bitmaps on the
    // stack, so that nothing is allocated in what reclaim may call: mirrors
    // past the first `PASS_MIRRORS` of the list get all three at once in
    // the first pass.
    let mut ret = 0;
    let mut pending = 0u64;
    for (i, m) in mirrors.iter().enumerate() {
        // SAFETY: A listed mirror is alive while we hold the list lock.
        let m = unsafe { m.as_ref() };
        // A mirror's own migration to device memory: it maps what moves
        // itself, and what stays is unchanged (hmm_mirror/migrate.rs).
        if matches!(inv.event, NotifierEvent::Migrate) && m.is_migration_owner(r.owner) {
            // Its DMA mappings go all the same: the pages that move are
            // freed (its driver does not use a range it is migrating).
            m.unmap_dma(event.start, event.end);
            continue;
        }
        // EAGAIN, non-blockable: the mirrors done already only lost entries
        // early, which is safe; mm retries the whole range.
        if i >= PASS_MIRRORS {
            if let Err(e) = m.invalidate(&event, blockable) {
                ret = e.to_errno();
            }
            continue;
        }
        match m.invalidate_start(&event, blockable) {
            // Done at once: its table changes now, so that a driver that
            // never answers pending sees update() and update_end() in a
            // row, as it always did (one that holds a device lock from
            // one to the other and mirrors the mm twice must).
            Ok(Update::Done) => m.invalidate_apply(&event, true, false),
            Ok(Update::Pending) => pending |= 1 << i,
            Err(e) => ret = e.to_errno(),
        }
    }
    let mut finished = 0;
    if pending != 0 {
        hmm.two_pass.add(1, Relaxed);
        let t = Instant::<Monotonic>::now();
        for (i, m) in mirrors.iter().enumerate().take(PASS_MIRRORS) {
            if pending & 1 << i != 0 {
                // SAFETY: As above.
                match unsafe { m.as_ref() }.invalidate_finish(&event, blockable) {
                    Ok(()) => finished |= 1 << i,
                    Err(e) => ret = e.to_errno(),
                }
            }
        }
        hmm.wait_ns.add(t.elapsed().as_nanos() as u64, Relaxed);
    }
    for (i, m) in mirrors.iter().enumerate().take(PASS_MIRRORS) {
        if pending & 1 << i != 0 {
            // SAFETY: As above.
            unsafe { m.as_ref() }.invalidate_apply(&event, finished & 1 << i != 0, true);
        }
    }
    ret
}

/// Mirrors of an mm that an invalidation takes through its three passes
/// (bits of a `u64`); more get all three at once, in the first.
const PASS_MIRRORS: usize = 64;

/// `release`: the mm is going away (its last user exited).
///
/// # Safety
///
/// Called by mm with a live notifier of ours.
unsafe extern "C" fn hmm_release(
    notifier: *mut bindings::mmu_notifier,
    _mm: *mut bindings::mm_struct,
) {
    // SAFETY: mm calls us with our live notifier.
    let hmm = unsafe { HmmMm::from_notifier(notifier) };
    hmm.count(HmmEventType::Munmap);
    for m in hmm.mirrors.lock().iter() {
        // SAFETY: A listed mirror is alive while we hold the list lock.
        unsafe { m.as_ref() }.release();
    }
}

#[cfg(CONFIG_KUNIT = "y")]
mod tests;
