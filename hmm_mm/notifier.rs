// SPDX-License-Identifier: GPL-2.0

//! The C edge of [`HmmMm`]: its `mmu_notifier` (`mmu_notifier_get`/`put`,
//! the ops mm calls) and the counted reference mirrors hold.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).

use core::ptr::NonNull;
use kernel::{
    bindings,
    mm::MmWithUser,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Relaxed, Release},
    time::{Delta, Instant, Monotonic},
};

use super::HmmMm;
use crate::{
    hmm_event::{HmmEvent, Invalidation, NotifierEvent},
    shim,
};

/// How many [`HmmMm`] exist: each holds one registered `mmu_notifier`.
pub(super) static LIVE_MMS: Atomic<u64> = Atomic::new(0);

/// The [`HmmMm`] of a notifier of ours.
///
/// # Safety
///
/// `notifier` must be the `notifier` field of a live [`HmmMm`].
unsafe fn from_notifier<'a>(notifier: *mut bindings::mmu_notifier) -> &'a HmmMm {
    // SAFETY: `notifier` is the first field of a `#[repr(C)]` `HmmMm`
    // that is live, by the caller's guarantee; `Opaque` is transparent.
    unsafe { &*notifier.cast::<HmmMm>() }
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
pub(super) unsafe extern "C" fn hmm_invalidate_range_start(
    notifier: *mut bindings::mmu_notifier,
    range: *const bindings::mmu_notifier_range,
) -> core::ffi::c_int {
    // SAFETY: mm calls us with our live notifier and a valid range.
    let (hmm, r) = unsafe { (from_notifier(notifier), &*range) };
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
    match hmm.invalidate(r.event, inv.event, &event, blockable, r.owner) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

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
    unsafe { from_notifier(notifier) }.release();
}
