// SPDX-License-Identifier: GPL-2.0

//! The HMM state of an mm ([`HmmMm`]): its one `mmu_notifier`, shared by
//! every mirror of the mm, which turns each CPU page-table change into an
//! [`HmmEvent`] and takes the mm's mirrors through it in three passes.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).

use core::ptr::NonNull;
use kernel::{
    bindings,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        new_mutex, Mutex,
    },
    time::{Instant, Monotonic},
    types::Opaque,
};

mod notifier;

pub(crate) use notifier::{wait_for_freed_notifiers, HmmMmRef};

use crate::{
    hmm_event::{HmmEvent, HmmEventType, NotifierEvent},
    hmm_mirror::{Finished, HmmMirror, Passes, Update},
    stats, trace,
};

/// Numbers [`HmmMm`]s for debugfs.
static NEXT_MM_ID: Atomic<u64> = Atomic::new(1);

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
    /// The mirrors of the mm. Nothing allocates while holding the lock, so
    /// reclaim never waits on it.
    #[pin]
    mirrors: Mutex<KVec<Listed>>,
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
        stats::EVENTS[ty as usize].add(1);
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
    ///
    /// # Safety
    ///
    /// `mirror` is alive until it calls [`Self::remove_mirror`], which it
    /// must do before it is freed.
    pub(crate) unsafe fn add_mirror(&self, mirror: NonNull<HmmMirror>) -> Result {
        loop {
            let mut list = self.mirrors.lock();
            // INVARIANT: alive until it unlists itself (caller's guarantee).
            if list.push_within_capacity(Listed(mirror)).is_ok() {
                return Ok(());
            }
            let want = list.capacity() * 2 + 4;
            drop(list);
            let mut bigger = KVec::with_capacity(want, GFP_KERNEL)?;
            let mut list = self.mirrors.lock();
            if bigger.capacity() > list.len() {
                for m in list.drain_all() {
                    // Cannot fail: `bigger` has room for all of them.
                    let _ = bigger.push_within_capacity(m);
                }
                *list = bigger;
            }
        }
    }

    /// Unlists a mirror; it gets no invalidation after this returns.
    pub(crate) fn remove_mirror(&self, mirror: NonNull<HmmMirror>) {
        let mut list = self.mirrors.lock();
        if let Some(i) = list.iter().position(|m| m.0 == mirror) {
            // In bounds: `i` was just found.
            let _ = list.remove(i);
        }
    }

    /// How many mirrors the mm has.
    pub(crate) fn mirror_count(&self) -> usize {
        self.mirrors.lock().len()
    }

    /// Takes every mirror of the mm through `event` (the kernel's `code`,
    /// decoded into `kind`), in three passes (see `MirrorOps`). `owner` is
    /// the invalidation's (a mirror migrating its own pages). Only a
    /// non-blockable invalidation may fail, and only with `EAGAIN`.
    fn invalidate(
        &self,
        code: u32,
        event_kind: NotifierEvent,
        event: &HmmEvent,
        blockable: bool,
        owner: *mut core::ffi::c_void,
    ) -> Result {
        self.count(event.ty);
        let mirrors = if blockable {
            Some(self.mirrors.lock())
        } else {
            self.nonblocking.add(1, Relaxed);
            self.mirrors.try_lock()
        };
        // Only a non-blockable invalidation may fail, and only with EAGAIN.
        let Some(mirrors) = mirrors else {
            trace::invalidate(self.id, code, event, blockable, 0);
            return Err(EAGAIN);
        };
        trace::invalidate(self.id, code, event, blockable, mirrors.len());
        // Three passes (see `MirrorOps`): every device starts (those done at
        // once are applied at once), the pending ones are waited for, then
        // their tables change. Which mirror is where is kept in bitmaps on the
        // stack, so that nothing is allocated in what reclaim may call: mirrors
        // past the first `PASS_MIRRORS` of the list get all three at once in
        // the first pass.
        let mut ret = Ok(());
        let mut pending = 0u64;
        for (i, m) in mirrors.iter().enumerate() {
            let m = m.get();
            // A mirror's own migration to device memory: it maps what moves
            // itself, and what stays is unchanged (hmm_mirror/migrate.rs).
            if matches!(event_kind, NotifierEvent::Migrate) && m.is_migration_owner(owner) {
                // Its DMA mappings go all the same: the pages that move are
                // freed (its driver does not use a range it is migrating).
                m.unmap_dma(event.start, event.end);
                continue;
            }
            // EAGAIN, non-blockable: the mirrors done already only lost entries
            // early, which is safe; mm retries the whole range.
            if i >= PASS_MIRRORS {
                if let Err(e) = m.invalidate(event, blockable) {
                    ret = Err(e);
                }
                continue;
            }
            match m.invalidate_start(event, blockable) {
                // Done at once: its table changes now, so that a driver that
                // never answers pending sees update() and update_end() in a
                // row, as it always did (one that holds a device lock from
                // one to the other and mirrors the mm twice must).
                Ok(Update::Done) => m.invalidate_apply(event, Finished::Yes, Passes::One),
                Ok(Update::Pending) => pending |= 1 << i,
                Err(e) => ret = Err(e),
            }
        }
        let mut finished = 0;
        if pending != 0 {
            self.two_pass.add(1, Relaxed);
            let t = Instant::<Monotonic>::now();
            for (i, m) in mirrors.iter().enumerate().take(PASS_MIRRORS) {
                if pending & 1 << i != 0 {
                    match m.get().invalidate_finish(event, blockable) {
                        Ok(()) => finished |= 1 << i,
                        Err(e) => ret = Err(e),
                    }
                }
            }
            self.wait_ns.add(t.elapsed().as_nanos() as u64, Relaxed);
        }
        for (i, m) in mirrors.iter().enumerate().take(PASS_MIRRORS) {
            if pending & 1 << i != 0 {
                let done = if finished & 1 << i != 0 {
                    Finished::Yes
                } else {
                    Finished::No
                };
                m.get().invalidate_apply(event, done, Passes::Two);
            }
        }
        ret
    }

    /// The mm is going away (its last user exited): every mirror is told.
    fn release(&self) {
        self.count(HmmEventType::Munmap);
        for m in self.mirrors.lock().iter() {
            m.get().release();
        }
    }
}

/// A listed mirror.
///
/// # Invariants
///
/// The mirror is alive while it is on its [`HmmMm`]'s list: it unlists
/// itself ([`HmmMm::remove_mirror`]), under the list lock, before it is
/// freed.
struct Listed(NonNull<HmmMirror>);

impl Listed {
    /// The mirror, for as long as the list (and so its lock) is borrowed.
    fn get(&self) -> &HmmMirror {
        // SAFETY: Alive while listed (type invariant); `&self` borrows the
        // list under its lock.
        unsafe { self.0.as_ref() }
    }
}

/// Mirrors of an mm that an invalidation takes through its three passes
/// (bits of a `u64`); more get all three at once, in the first.
const PASS_MIRRORS: usize = 64;

#[cfg(CONFIG_KUNIT = "y")]
mod tests;
