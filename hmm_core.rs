// SPDX-License-Identifier: GPL-2.0

//! hmm-rs: a Heterogeneous Memory Management core in Rust.
//!
//! Lets a device mirror a process's address space: one `mmu_notifier` per mm
//! shared by every mirror of it ([`HmmMm`], here), a per-mirror page table
//! ([`hmm_pt`]), and typed events ([`hmm_event`]) handed to device drivers
//! ([`hmm_mirror`]) before the mirror table changes. This file also holds the
//! module, its debugfs files and the entry points of the C API that
//! `hmm_rs.h` declares for C drivers (exported by `hmm_shim.c`).
//!
//! Built on: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
//! and [`include/linux/hmm.h`](srctree/include/linux/hmm.h).

use core::ptr::NonNull;
use kernel::{
    bindings, debugfs, fmt,
    mm::MmWithUser,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        new_mutex, rcu, Arc, Mutex,
    },
    time::{Instant, Monotonic},
    types::Opaque,
    uaccess::UserSliceReader,
};

#[path = "tests/core_bench.rs"]
mod core_bench;
mod hmm_event;
mod hmm_mirror;
mod hmm_pt;
#[path = "tests/pt_bench.rs"]
mod pt_bench;

/// The C shim (`hmm_shim.c`): inline kernel helpers Rust cannot reach.
mod shim {
    use kernel::bindings::{self, page};

    /// `struct hmm_rs_pagemap` of hmm_shim.c (opaque).
    #[repr(C)]
    pub(crate) struct Pagemap {
        _opaque: [u8; 0],
    }

    /// `struct hmm_rs_migrate` of hmm_shim.c (opaque).
    #[repr(C)]
    pub(crate) struct Migrate {
        _opaque: [u8; 0],
    }

    // `struct page` ends in a zero-sized array member, which rustc cannot
    // prove FFI-safe; only pointers to it cross this boundary.
    #[expect(improper_ctypes)]
    extern "C" {
        /// `page_address()`: the kernel address of a lowmem `page`.
        pub(crate) fn hmm_rs_page_address(page: *mut page) -> *mut core::ffi::c_void;
        /// `virt_to_page()` of a lowmem kernel address.
        pub(crate) fn hmm_rs_virt_to_page(addr: *const core::ffi::c_void) -> *mut page;
        /// Frees an order-0 `page` we own after an RCU grace period.
        pub(crate) fn hmm_rs_free_page_rcu(page: *mut page);
        /// `mmu_notifier_get()`: the notifier of `mm` with `ops`, allocated
        /// by `ops->alloc_notifier` if there is none; takes `mmap_lock`.
        pub(crate) fn hmm_rs_mmu_notifier_get(
            ops: *const bindings::mmu_notifier_ops,
            mm: *mut bindings::mm_struct,
        ) -> *mut bindings::mmu_notifier;
        /// `mmu_notifier_range_blockable()`.
        pub(crate) fn hmm_rs_range_blockable(range: *const bindings::mmu_notifier_range) -> bool;
        /// Whether `range` is a fork's write-protection (see `hmm_event`).
        pub(crate) fn hmm_rs_range_in_fork(range: *const bindings::mmu_notifier_range) -> bool;
        /// Whether a `PROTECTION_VMA` range stays readable (see `hmm_event`).
        pub(crate) fn hmm_rs_range_stays_readable(
            range: *const bindings::mmu_notifier_range,
        ) -> bool;
        /// `folio_mark_dirty()` of the page at `pfn`, if it has a `struct page`.
        pub(crate) fn hmm_rs_mark_pfn_dirty(pfn: kernel::ffi::c_ulong);
        /// `pfn_to_page()`, or null for a PFN without a `struct page`.
        pub(crate) fn hmm_rs_pfn_to_page(pfn: kernel::ffi::c_ulong) -> *mut page;
        /// `folio_test_dirty()` of the folio of `page`.
        #[cfg(CONFIG_KUNIT)]
        pub(crate) fn hmm_rs_page_dirty(page: *mut page) -> bool;
        /// `HMM_PFN_WRITE`.
        pub(crate) static hmm_rs_pfn_write: kernel::ffi::c_ulong;
        /// `HMM_PFN_ERROR`.
        pub(crate) static hmm_rs_pfn_error: kernel::ffi::c_ulong;
        /// `HMM_PFN_FLAGS`: the bits of an hmm pfn that are not the PFN.
        pub(crate) static hmm_rs_pfn_flags: kernel::ffi::c_ulong;
        /// Turns `n` hmm pfns of a snapshot into `HMM_RS_SNAP_*` values (see
        /// [`crate::hmm_mirror::snap`]) for a mirror of device `owner`; only
        /// PFNs in `[dev_lo, dev_hi)` may be device pages.
        pub(crate) fn hmm_rs_snap_decode(
            pfns: *const kernel::ffi::c_ulong,
            out: *mut u32,
            n: usize,
            owner: *mut core::ffi::c_void,
            dev_lo: usize,
            dev_hi: usize,
        );
        /// `hmm_pfn_to_map_order()`.
        pub(crate) fn hmm_rs_pfn_order(hmm_pfn: kernel::ffi::c_ulong) -> kernel::ffi::c_uint;
        /// Inserts `sub` over all of user space of `mm`.
        pub(crate) fn hmm_rs_interval_insert(
            sub: *mut bindings::mmu_interval_notifier,
            mm: *mut bindings::mm_struct,
            ops: *const bindings::mmu_interval_notifier_ops,
        ) -> core::ffi::c_int;
        /// Inserts `sub` over `[start, end)` of the mm of `mirror` (an
        /// inserted interval notifier); `ESRCH` if the mm has no users.
        pub(crate) fn hmm_rs_interval_insert_range(
            sub: *mut bindings::mmu_interval_notifier,
            mirror: *mut bindings::mmu_interval_notifier,
            start: usize,
            end: usize,
            ops: *const bindings::mmu_interval_notifier_ops,
        ) -> kernel::ffi::c_int;
        /// `fatal_signal_pending(current)`.
        pub(crate) fn hmm_rs_fatal_signal_pending() -> bool;
        /// `mmu_interval_read_retry()`.
        pub(crate) fn hmm_rs_interval_read_retry(
            sub: *mut bindings::mmu_interval_notifier,
            seq: kernel::ffi::c_ulong,
        ) -> bool;
        /// `mmu_interval_set_seq()`.
        pub(crate) fn hmm_rs_interval_set_seq(
            sub: *mut bindings::mmu_interval_notifier,
            cur_seq: kernel::ffi::c_ulong,
        );
        /// `hmm_range_fault()` of `[start, end)` under `mmap_lock`; see hmm_shim.c.
        pub(crate) fn hmm_rs_range_fault(
            sub: *mut bindings::mmu_interval_notifier,
            start: kernel::ffi::c_ulong,
            end: kernel::ffi::c_ulong,
            pfns: *mut kernel::ffi::c_ulong,
            how: kernel::ffi::c_uint,
            owner: *mut core::ffi::c_void,
            seq: *mut kernel::ffi::c_ulong,
        ) -> core::ffi::c_int;
        /// Address bits of user space: 47, or 56 with 5-level paging.
        pub(crate) fn hmm_rs_user_address_bits() -> kernel::ffi::c_uint;
        /// `HMM_RS_PT_VALID`, `_WRITE`, `_DIRTY`, `_DEVICE`, `_EXCLUSIVE` of hmm_rs.h.
        #[cfg(CONFIG_KUNIT)]
        pub(crate) static hmm_rs_c_pt_flags: [u64; 5];
        /// Holds the notifier's mm and its `mmap_lock` for reading.
        pub(crate) fn hmm_rs_mm_lock(sub: *mut bindings::mmu_interval_notifier)
            -> core::ffi::c_int;
        /// Undoes `hmm_rs_mm_lock`.
        pub(crate) fn hmm_rs_mm_unlock(sub: *mut bindings::mmu_interval_notifier);
        /// `make_device_exclusive()`: the pfn or an errno; `folio` stays locked.
        pub(crate) fn hmm_rs_make_exclusive(
            sub: *mut bindings::mmu_interval_notifier,
            addr: kernel::ffi::c_ulong,
            owner: *mut core::ffi::c_void,
            folio: *mut *mut bindings::folio,
        ) -> core::ffi::c_long;
        /// Unlocks and puts a folio from `hmm_rs_make_exclusive`.
        pub(crate) fn hmm_rs_exclusive_done(folio: *mut bindings::folio);
        /// `mmu_interval_read_begin()`.
        pub(crate) fn hmm_rs_interval_read_begin(
            sub: *mut bindings::mmu_interval_notifier,
        ) -> kernel::ffi::c_ulong;
        /// A device-private pagemap of `npages` pages: pointer or `ERR_PTR`.
        pub(crate) fn hmm_rs_pagemap_create(
            npages: kernel::ffi::c_ulong,
            owner: *mut core::ffi::c_void,
            phys: u64,
            first_pfn: *mut kernel::ffi::c_ulong,
        ) -> *mut Pagemap;
        /// Where the pagemap's page callbacks go.
        pub(crate) fn hmm_rs_pagemap_set_rust(pm: *mut Pagemap, rust: *const core::ffi::c_void);
        /// `memunmap_pages()`: waits until no page is referenced.
        pub(crate) fn hmm_rs_pagemap_destroy(pm: *mut Pagemap);
        /// `zone_device_folio_init()` of the free page at `pfn`.
        pub(crate) fn hmm_rs_devpage_init(
            pm: *mut Pagemap,
            pfn: kernel::ffi::c_ulong,
            order: kernel::ffi::c_uint,
        );
        /// Whether `pfn` is a device-private page.
        pub(crate) fn hmm_rs_pfn_is_device_private(pfn: kernel::ffi::c_ulong) -> bool;
        /// A migration step's state, or null.
        pub(crate) fn hmm_rs_migrate_alloc() -> *mut Migrate;
        pub(crate) fn hmm_rs_migrate_free(m: *mut Migrate);
        /// `migrate_vma_setup()` of one VMA's part of `[addr, end)`.
        pub(crate) fn hmm_rs_migrate_setup(
            m: *mut Migrate,
            sub: *mut bindings::mmu_interval_notifier,
            addr: kernel::ffi::c_ulong,
            end: kernel::ffi::c_ulong,
            owner: *mut core::ffi::c_void,
            to_device: bool,
        ) -> core::ffi::c_long;
        /// `migrate_vma_setup()` of the page a CPU fault hit.
        pub(crate) fn hmm_rs_migrate_setup_fault(
            m: *mut Migrate,
            vmf: *mut core::ffi::c_void,
        ) -> core::ffi::c_long;
        /// `migrate_device_range()`.
        pub(crate) fn hmm_rs_migrate_setup_device(
            m: *mut Migrate,
            pfn: kernel::ffi::c_ulong,
            npages: kernel::ffi::c_ulong,
        ) -> core::ffi::c_long;
        /// The src and dst arrays of `m`, `HMM_RS_MIGRATE_MAX` entries each.
        pub(crate) fn hmm_rs_migrate_src_pfns(m: *mut Migrate) -> *mut kernel::ffi::c_ulong;
        pub(crate) fn hmm_rs_migrate_dst_pfns(m: *mut Migrate) -> *mut kernel::ffi::c_ulong;
        /// `MIGRATE_PFN_VALID`, `_MIGRATE`, `_WRITE`, `_COMPOUND`, `_SHIFT`.
        pub(crate) static hmm_rs_migrate_pfn_bits: [kernel::ffi::c_ulong; 5];
        /// A new, locked system page for page `i`: its pfn, or 0.
        pub(crate) fn hmm_rs_migrate_alloc_system(
            m: *mut Migrate,
            i: kernel::ffi::c_ulong,
            order: kernel::ffi::c_uint,
        ) -> kernel::ffi::c_ulong;
        /// `migrate_vma_pages()` / `migrate_device_pages()`.
        pub(crate) fn hmm_rs_migrate_pages(m: *mut Migrate);
        /// Sleeps a millisecond or two before busy pages are tried again;
        /// returns the nanoseconds it slept.
        pub(crate) fn hmm_rs_migrate_backoff() -> u64;
        /// `migrate_vma_finalize()` / `migrate_device_finalize()`.
        pub(crate) fn hmm_rs_migrate_finalize(m: *mut Migrate);
        /// Unlocks and frees an unused page of `hmm_rs_migrate_alloc_system`.
        pub(crate) fn hmm_rs_migrate_drop_page(pfn: kernel::ffi::c_ulong);
        /// The [`crate::hmm_mirror::devmem::DevMem`] of a device-private page.
        pub(crate) fn hmm_rs_pfn_devmem(pfn: kernel::ffi::c_ulong) -> *const core::ffi::c_void;
        /// `HMM_RS_SNAP_VALID`, `_WRITE`, `_ERROR`, `_ZERO`, `_DEVICE`,
        /// `_COHERENT`, `_REMOTE` of hmm_rs.h.
        #[cfg(CONFIG_KUNIT)]
        pub(crate) static hmm_rs_c_snap_flags: [u32; 7];
    }
}

use hmm_event::{HmmEvent, HmmEventType, Invalidation, NotifierEvent};
use hmm_mirror::{
    devmem::{copy_pages_from_device, copy_pages_to_device, DevMem, DevMemOps, Owner, SysPage},
    HmmMirror, Update,
};

module! {
    type: HmmCore,
    name: "hmm_rs",
    authors: ["hmm-rs developers"],
    description: "Heterogeneous Memory Management core in Rust",
    license: "GPL",
}

/// How many [`HmmMm`] exist: each holds one registered `mmu_notifier`.
static LIVE_MMS: Atomic<u64> = Atomic::new(0);

/// Numbers [`HmmMm`]s for debugfs.
static NEXT_MM_ID: Atomic<u64> = Atomic::new(1);

/// A text buffer that grows with `GFP_KERNEL`.
pub(crate) struct TextBuf(pub(crate) KVec<u8>);

impl core::fmt::Write for TextBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

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
    LIVE_MMS.fetch_sub(1, Relaxed);
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
        return EAGAIN.to_errno();
    };
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
            Ok(Update::Done) => m.invalidate_apply(&event, true),
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
            unsafe { m.as_ref() }.invalidate_apply(&event, finished & 1 << i != 0);
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

/// `struct hmm_rs_device_ops` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CDeviceOps {
    update: Option<
        unsafe extern "C" fn(
            *mut HmmMirror,
            *const CEvent,
            bool,
            *mut core::ffi::c_void,
        ) -> core::ffi::c_int,
    >,
    release: Option<unsafe extern "C" fn(*mut HmmMirror, *mut core::ffi::c_void)>,
    update_end: Option<unsafe extern "C" fn(*mut HmmMirror, *const CEvent, *mut core::ffi::c_void)>,
    update_finish: Option<
        unsafe extern "C" fn(
            *mut HmmMirror,
            *const CEvent,
            bool,
            *mut core::ffi::c_void,
        ) -> core::ffi::c_int,
    >,
}

/// `HMM_RS_UPDATE_PENDING` of hmm_rs.h: `update()` started the device's
/// invalidation; `update_finish()` waits for it.
const C_UPDATE_PENDING: core::ffi::c_int = 1;

/// `struct hmm_rs_event` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CEvent {
    ty: u32,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    keep: u64,
}

impl From<&HmmEvent> for CEvent {
    fn from(event: &HmmEvent) -> Self {
        Self {
            ty: event.ty as u32,
            start: event.start as usize,
            end: event.end as usize,
            keep: event.keep.bits(),
        }
    }
}

/// `struct hmm_rs_device`: a C driver's callbacks, and how many mirrors use
/// them.
pub(crate) struct CDevice {
    ops: *const CDeviceOps,
    mirrors: Atomic<u64>,
    devmems: Atomic<u64>,
}

/// The [`hmm_mirror::MirrorOps`] of a mirror registered from C.
///
/// # Invariants
///
/// `device` is a live [`CDevice`] whose `mirrors` counts this object.
struct CMirrorOps {
    device: NonNull<CDevice>,
    private: *mut core::ffi::c_void,
}

// SAFETY: The C API requires callbacks callable from any task.
unsafe impl Send for CMirrorOps {}
// SAFETY: As above.
unsafe impl Sync for CMirrorOps {}

impl CMirrorOps {
    fn ops(&self) -> &CDeviceOps {
        // SAFETY: The device is alive (type invariant) and its ops pointer
        // valid, which `hmm_rs_device_register` requires of the driver.
        unsafe { &*self.device.as_ref().ops }
    }
}

impl hmm_mirror::MirrorOps for CMirrorOps {
    fn update(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result<Update> {
        let Some(f) = self.ops().update else {
            return Ok(Update::Done);
        };
        let mirror = core::ptr::from_ref(mirror).cast_mut();
        // SAFETY: The driver's callback, with its own private pointer.
        match unsafe { f(mirror, &CEvent::from(event), blockable, self.private) } {
            // Pending without update_finish() is a driver bug: the error
            // is logged and the event stands.
            C_UPDATE_PENDING if self.ops().update_finish.is_some() => Ok(Update::Pending),
            C_UPDATE_PENDING => Err(EINVAL),
            r => kernel::error::to_result(r).map(|()| Update::Done),
        }
    }

    fn update_finish(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result {
        let Some(f) = self.ops().update_finish else {
            return Ok(());
        };
        let mirror = core::ptr::from_ref(mirror).cast_mut();
        // SAFETY: As above.
        kernel::error::to_result(unsafe {
            f(mirror, &CEvent::from(event), blockable, self.private)
        })
    }

    fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
        if let Some(f) = self.ops().update_end {
            let mirror = core::ptr::from_ref(mirror).cast_mut();
            // SAFETY: As above.
            unsafe { f(mirror, &CEvent::from(event), self.private) };
        }
    }

    fn release(&self, mirror: &HmmMirror) {
        if let Some(f) = self.ops().release {
            // SAFETY: As above.
            unsafe { f(core::ptr::from_ref(mirror).cast_mut(), self.private) };
        }
    }
}

impl Drop for CMirrorOps {
    fn drop(&mut self) {
        // SAFETY: The device is alive (type invariant).
        unsafe { self.device.as_ref() }
            .mirrors
            .fetch_sub(1, Relaxed);
    }
}

/// 0, or the negative errno of `r`, for the C API.
fn errno(r: Result) -> core::ffi::c_int {
    r.map_or_else(|e| e.to_errno(), |()| 0)
}

/// # Safety
///
/// `ops` must be null or valid until the device is unregistered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_device_register(ops: *const CDeviceOps) -> *mut CDevice {
    if ops.is_null() {
        return EINVAL.to_ptr();
    }
    match KBox::new(
        CDevice {
            ops,
            mirrors: Atomic::new(0),
            devmems: Atomic::new(0),
        },
        GFP_KERNEL,
    ) {
        Ok(dev) => KBox::into_raw(dev),
        Err(_) => ENOMEM.to_ptr(),
    }
}

/// # Safety
///
/// `device` came from `hmm_rs_rust_device_register` and is unregistered once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_device_unregister(device: *mut CDevice) {
    // SAFETY: A registered device, by the caller's guarantee.
    let (mirrors, devmems) = unsafe {
        (
            (*device).mirrors.load(Relaxed),
            (*device).devmems.load(Relaxed),
        )
    };
    if mirrors != 0 || devmems != 0 {
        // Freeing it would leave its mirrors with dangling callbacks.
        pr_err!(
            "hmm_rs_device_unregister: refused, the device still has {mirrors} mirror(s) and {devmems} device memory region(s)\n"
        );
        return;
    }
    // SAFETY: From `KBox::into_raw` in `hmm_rs_rust_device_register`.
    drop(unsafe { KBox::from_raw(device) });
}

/// # Safety
///
/// `device` is registered; `mm` has users for the duration of the call.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_register(
    device: *mut CDevice,
    mm: *mut bindings::mm_struct,
    private: *mut core::ffi::c_void,
) -> *mut HmmMirror {
    let (Some(dev), false) = (NonNull::new(device), mm.is_null()) else {
        return EINVAL.to_ptr();
    };
    // SAFETY: `mm` has users, by the caller's guarantee.
    let mm = unsafe { MmWithUser::from_raw(mm) };
    // SAFETY: A registered device, by the caller's guarantee.
    unsafe { dev.as_ref() }.mirrors.add(1, Relaxed);
    // INVARIANT: counted just above; dropping the ops uncounts it.
    let ops = CMirrorOps {
        device: dev,
        private,
    };
    let ops = match KBox::new(ops, GFP_KERNEL) {
        Ok(ops) => ops,
        Err(_) => return ENOMEM.to_ptr(),
    };
    match HmmMirror::register(mm, Owner::of(device), ops) {
        Ok(mirror) => Arc::into_raw(mirror).cast_mut(),
        Err(e) => e.to_ptr(),
    }
}

/// # Safety
///
/// `mirror` came from `hmm_rs_rust_mirror_register` and is unregistered once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_unregister(mirror: *mut HmmMirror) {
    // SAFETY: From `Arc::into_raw` in `hmm_rs_rust_mirror_register`.
    drop(unsafe { Arc::from_raw(mirror) });
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_fault(
    mirror: *mut HmmMirror,
    ty: u32,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    let Some(ty) = HmmEventType::from_raw(ty) else {
        return EINVAL.to_errno();
    };
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.fault(ty, start as u64, end as u64))
}

/// # Safety
///
/// `mirror` is registered; `out` has room for one value per page.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_snapshot(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    out: *mut u32,
) -> core::ffi::c_int {
    if out.is_null() || start >= end || (end - start) % hmm_pt::PAGE_SIZE as usize != 0 {
        return EINVAL.to_errno();
    }
    let pages = (end - start) / hmm_pt::PAGE_SIZE as usize;
    // SAFETY: `out` has room for `pages` values, by the caller's guarantee.
    let out = unsafe { core::slice::from_raw_parts_mut(out, pages) };
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.snapshot(start as u64, end as u64, out))
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_make_exclusive(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    // SAFETY: A registered mirror, by the caller's guarantee.
    errno(unsafe { &*mirror }.make_exclusive(start as u64, end as u64))
}

/// `hmm_rs_walk_fn` of hmm_rs.h.
type CWalkFn = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    kernel::ffi::c_ulong,
    u64,
    kernel::ffi::c_uint,
    u64,
) -> core::ffi::c_int;

/// # Safety
///
/// `mirror` is registered; `f` is callable with `arg` under RCU.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_walk(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
    f: Option<CWalkFn>,
    arg: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let Some(f) = f else {
        return EINVAL.to_errno();
    };
    let mut ret = 0;
    // SAFETY: A registered mirror, by the caller's guarantee.
    let walked = unsafe { &*mirror }
        .table()
        .walk_until(start as u64, end as u64, |m| {
            // SAFETY: The driver's callback, with its own argument.
            ret = unsafe {
                f(
                    arg,
                    m.addr as usize,
                    m.entry.pfn(),
                    m.order,
                    m.entry.flags().bits(),
                )
            };
            ret != 0
        });
    match walked {
        Ok(_) => ret,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_set_dirty(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_int {
    // SAFETY: A registered mirror, by the caller's guarantee.
    match unsafe { &*mirror }
        .table()
        .lock()
        .set_dirty(start as u64, end as u64)
    {
        Ok(n) => n.try_into().unwrap_or(core::ffi::c_int::MAX),
        Err(e) => e.to_errno(),
    }
}

/// `struct hmm_rs_devmem_ops` of hmm_rs.h.
#[repr(C)]
pub(crate) struct CDevMemOps {
    copy_to_device: Option<
        unsafe extern "C" fn(
            *mut core::ffi::c_void,
            kernel::ffi::c_ulong,
            *mut bindings::page,
        ) -> core::ffi::c_int,
    >,
    copy_from_device: Option<
        unsafe extern "C" fn(
            *mut core::ffi::c_void,
            kernel::ffi::c_ulong,
            *mut bindings::page,
        ) -> core::ffi::c_int,
    >,
    free: Option<unsafe extern "C" fn(*mut core::ffi::c_void, kernel::ffi::c_ulong)>,
    copy_folio_to_device: Option<CFolioCopy>,
    copy_folio_from_device: Option<CFolioCopy>,
}

/// `copy_folio_to_device` / `copy_folio_from_device` of `struct hmm_rs_devmem_ops`.
type CFolioCopy = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    kernel::ffi::c_ulong,
    *mut bindings::page,
    kernel::ffi::c_uint,
) -> core::ffi::c_int;

/// The [`DevMemOps`] of device memory created from C.
///
/// # Invariants
///
/// `ops` is valid and has both copy callbacks; `device` is a live
/// [`CDevice`] whose `devmems` counts this object.
struct CDevMem {
    device: NonNull<CDevice>,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
}

// SAFETY: The C API requires callbacks callable from any task.
unsafe impl Send for CDevMem {}
// SAFETY: As above.
unsafe impl Sync for CDevMem {}

impl CDevMem {
    fn ops(&self) -> &CDevMemOps {
        // SAFETY: Valid until the device memory is destroyed (type invariant).
        unsafe { &*self.ops }
    }
}

/// The `struct page` of a system page given to a copy callback.
fn sys_page(p: SysPage) -> *mut bindings::page {
    // SAFETY: Any PFN may be passed.
    unsafe { shim::hmm_rs_pfn_to_page(p.0 as usize) }
}

impl DevMemOps for CDevMem {
    fn copy_to_device(&self, index: usize, src: Option<SysPage>) -> Result {
        let f = self.ops().copy_to_device.ok_or(EINVAL)?;
        let src = src.map_or(core::ptr::null_mut(), sys_page);
        // SAFETY: The driver's callback with its own private pointer.
        kernel::error::to_result(unsafe { f(self.private, index, src) })
    }

    fn copy_from_device(&self, index: usize, dst: SysPage) -> Result {
        let f = self.ops().copy_from_device.ok_or(EINVAL)?;
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, sys_page(dst)) })
    }

    fn free(&self, index: usize) {
        if let Some(f) = self.ops().free {
            // SAFETY: As above.
            unsafe { f(self.private, index) };
        }
    }

    fn copy_folio_to_device(&self, index: usize, src: Option<SysPage>, order: u32) -> Result {
        let Some(f) = self.ops().copy_folio_to_device else {
            return copy_pages_to_device(self, index, src, order);
        };
        let src = src.map_or(core::ptr::null_mut(), sys_page);
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, src, order) })
    }

    fn copy_folio_from_device(&self, index: usize, dst: SysPage, order: u32) -> Result {
        let Some(f) = self.ops().copy_folio_from_device else {
            return copy_pages_from_device(self, index, dst, order);
        };
        // SAFETY: As above.
        kernel::error::to_result(unsafe { f(self.private, index, sys_page(dst), order) })
    }
}

impl Drop for CDevMem {
    fn drop(&mut self) {
        // SAFETY: The device is alive (type invariant).
        unsafe { self.device.as_ref() }
            .devmems
            .fetch_sub(1, Relaxed);
    }
}

/// # Safety
///
/// `device` is registered; `ops` is null or valid until the memory is
/// destroyed.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_create(
    device: *mut CDevice,
    phys: u64,
    npages: kernel::ffi::c_ulong,
    ops: *const CDevMemOps,
    private: *mut core::ffi::c_void,
) -> *const DevMem {
    let Some(dev) = NonNull::new(device) else {
        return EINVAL.to_ptr();
    };
    // SAFETY: `ops` is null or valid, by the caller's guarantee.
    match unsafe { ops.as_ref() } {
        Some(o) if o.copy_to_device.is_some() && o.copy_from_device.is_some() => {}
        _ => return EINVAL.to_ptr(),
    }
    // SAFETY: A registered device, by the caller's guarantee.
    unsafe { dev.as_ref() }.devmems.add(1, Relaxed);
    // INVARIANT: checked and counted just above.
    let ops = match KBox::new(
        CDevMem {
            device: dev,
            ops,
            private,
        },
        GFP_KERNEL,
    ) {
        Ok(ops) => ops,
        Err(_) => return ENOMEM.to_ptr(),
    };
    let coherent = (phys != 0).then_some(phys);
    match DevMem::new(Owner::of(device), npages, coherent, ops) {
        Ok(mem) => Arc::into_raw(mem),
        Err(e) => e.to_ptr(),
    }
}

/// # Safety
///
/// `mem` came from `hmm_rs_rust_devmem_create` and is destroyed once.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_destroy(mem: *const DevMem) {
    // SAFETY: From `Arc::into_raw` in `hmm_rs_rust_devmem_create`.
    drop(unsafe { Arc::from_raw(mem) });
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_evict(mem: *const DevMem) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    count_or_errno(unsafe { &*mem }.evict())
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_pfn(
    mem: *const DevMem,
    index: kernel::ffi::c_ulong,
) -> u64 {
    // SAFETY: Live, by the caller's guarantee.
    let mem = unsafe { &*mem };
    if index < mem.size() {
        mem.pfn(index)
    } else {
        0
    }
}

/// # Safety
///
/// `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_devmem_index(mem: *const DevMem, pfn: u64) -> core::ffi::c_long {
    // SAFETY: Live, by the caller's guarantee.
    match unsafe { &*mem }.index(pfn) {
        Some(i) => i as core::ffi::c_long,
        None => core::ffi::c_long::from(EINVAL.to_errno()),
    }
}

/// # Safety
///
/// `mirror` is registered; `mem` is live.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_migrate_to_device(
    mirror: *mut HmmMirror,
    mem: *const DevMem,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    if mem.is_null() {
        return core::ffi::c_long::from(EINVAL.to_errno());
    }
    // SAFETY: Registered and live, by the caller's guarantee.
    count_or_errno(unsafe { &*mirror }.migrate_to_device(
        unsafe { &*mem },
        start as u64,
        end as u64,
    ))
}

/// # Safety
///
/// `mirror` is registered.
#[no_mangle]
unsafe extern "C" fn hmm_rs_rust_mirror_migrate_to_system(
    mirror: *mut HmmMirror,
    start: kernel::ffi::c_ulong,
    end: kernel::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: Registered, by the caller's guarantee.
    count_or_errno(unsafe { &*mirror }.migrate_to_system(start as u64, end as u64))
}

/// A count, or the negative errno, for the C API.
fn count_or_errno(r: Result<usize>) -> core::ffi::c_long {
    r.map_or_else(
        |e| core::ffi::c_long::from(e.to_errno()),
        |n| n as core::ffi::c_long,
    )
}

/// The loaded module; owns everything the core registers with the kernel.
struct HmmCore {
    _debugfs: debugfs::Dir,
    _pt_bench: Pin<KBox<debugfs::File<Mutex<KVec<u8>>>>>,
    _core_bench: Pin<KBox<debugfs::File<Mutex<KVec<u8>>>>>,
    _stats: Pin<KBox<debugfs::File<()>>>,
}

impl kernel::Module for HmmCore {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        hmm_mirror::init();
        let dir = debugfs::Dir::new(c"hmm_rs");
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", (), &show_stats),
            GFP_KERNEL,
        )?;
        let pt_bench = KBox::pin_init(
            dir.read_write_callback_file(
                c"pt_bench",
                new_mutex!(KVec::new()),
                &show_pt_bench,
                &run_pt_bench,
            ),
            GFP_KERNEL,
        )?;
        let core_bench = KBox::pin_init(
            dir.read_write_callback_file(
                c"core_bench",
                new_mutex!(KVec::new()),
                &show_core_bench,
                &run_core_bench,
            ),
            GFP_KERNEL,
        )?;
        pr_info!("HMM core loaded, {} event types\n", HmmEventType::ALL.len());
        Ok(HmmCore {
            _debugfs: dir,
            _pt_bench: pt_bench,
            _core_bench: core_bench,
            _stats: stats,
        })
    }
}

/// Reading `hmm_rs/stats` shows the counters of every mm and mirror.
fn show_stats(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    hmm_mirror::write_stats(f)
}

/// Reading `hmm_rs/pt_bench` shows the last benchmark report.
fn show_pt_bench(report: &Mutex<KVec<u8>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    show_report(report, "write 'run' to this file", f)
}

/// Reading `hmm_rs/core_bench` shows the last benchmark report.
fn show_core_bench(report: &Mutex<KVec<u8>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    show_report(
        report,
        "write 'ADDR LEN' of your own memory to this file",
        f,
    )
}

fn show_report(report: &Mutex<KVec<u8>>, how: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let report = report.lock();
    match core::str::from_utf8(&report) {
        Ok(s) if !s.is_empty() => f.write_str(s),
        _ => writeln!(f, "no report yet: {how}"),
    }
}

/// Writing `run` to `hmm_rs/pt_bench` runs the page-table benchmark.
fn run_pt_bench(report: &Mutex<KVec<u8>>, input: &mut UserSliceReader) -> Result {
    let mut cmd = [0u8; 4];
    let len = input.len();
    if len > cmd.len() {
        return Err(EINVAL);
    }
    input.read_slice(&mut cmd[..len])?;
    if !matches!(&cmd[..len], b"run" | b"run\n") {
        return Err(EINVAL);
    }
    let mut report = report.lock();
    pr_info!("running the page-table benchmark\n");
    *report = pt_bench::pt_bench()?.0;
    Ok(())
}

/// Writing `ADDR LEN` to `hmm_rs/core_bench` runs the core's benchmark over
/// that range of the writer's memory (`tests/core_bench.rs`).
fn run_core_bench(report: &Mutex<KVec<u8>>, input: &mut UserSliceReader) -> Result {
    let mut cmd = [0u8; 64];
    let len = input.len();
    if len > cmd.len() {
        return Err(EINVAL);
    }
    input.read_slice(&mut cmd[..len])?;
    let text = core::str::from_utf8(&cmd[..len]).map_err(|_| EINVAL)?;
    let mut words = text.split_ascii_whitespace().map(parse_u64);
    let (Some(addr), Some(size), None) = (words.next(), words.next(), words.next()) else {
        return Err(EINVAL);
    };
    let mut report = report.lock();
    *report = core_bench::core_bench(addr?, size?)?.0;
    Ok(())
}

/// A decimal or `0x`-prefixed hexadecimal number.
fn parse_u64(s: &str) -> Result<u64> {
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    u64::from_str_radix(digits, radix).map_err(|_| EINVAL)
}

impl Drop for HmmCore {
    fn drop(&mut self) {
        // Notifiers and page-table directories are freed by callbacks in this
        // module after a grace period: wait for them before it goes away.
        // SAFETY: Always safe from process context.
        unsafe { bindings::mmu_notifier_synchronize() };
        rcu::rcu_barrier();
        pr_info!("HMM core unloaded\n");
    }
}

/// An mm for KUnit tests, which run in kernel threads without one.
#[cfg(CONFIG_KUNIT)]
pub(crate) mod kunit_mm {
    use kernel::{bindings, error::to_result, prelude::*, uaccess};

    // From the uapi <asm-generic/mman-common.h>, which `bindings` lacks.
    pub(crate) const PROT_NONE: usize = 0x0;
    pub(crate) const PROT_READ: usize = 0x1;
    pub(crate) const PROT_WRITE: usize = 0x2;
    const MAP_PRIVATE: usize = 0x02;
    const MAP_FIXED: usize = 0x10;
    const MAP_ANONYMOUS: usize = 0x20;

    /// Gives the test thread an mm of its own (KUnit frees it afterwards).
    pub(crate) fn attach() -> Result {
        // SAFETY: Called from a KUnit test thread.
        to_result(unsafe { bindings::kunit_attach_mm() })
    }

    /// Maps `len` bytes of private anonymous memory with `prot`.
    pub(crate) fn mmap(len: usize, prot: usize) -> Result<usize> {
        attach()?;
        // SAFETY: We run in a KUnit test with an mm attached.
        let addr = unsafe {
            bindings::kunit_vm_mmap(
                bindings::kunit_get_current_test(),
                core::ptr::null_mut(),
                0,
                len,
                prot,
                MAP_ANONYMOUS | MAP_PRIVATE,
                0,
            )
        };
        // kunit_vm_mmap() returns 0 on failure.
        if addr == 0 {
            return Err(ENOMEM);
        }
        Ok(addr)
    }

    /// Replaces `[addr, addr + len)` of the current mm with fresh read-write
    /// anonymous memory.
    pub(crate) fn remap(addr: usize, len: usize) -> Result {
        // SAFETY: A fixed anonymous mapping of our own range.
        let got = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                addr,
                len,
                PROT_READ | PROT_WRITE,
                MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE,
                0,
            )
        };
        if got != addr {
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Unmaps `[addr, addr + len)` of the test's mm.
    pub(crate) fn munmap(addr: usize, len: usize) -> Result {
        // SAFETY: Any range may be passed; the test owns its mm.
        to_result(unsafe { bindings::vm_munmap(addr, len) })
    }

    /// Writes `data` at user address `addr`, as the CPU.
    pub(crate) fn write(addr: usize, data: &[u8]) -> Result {
        uaccess::UserSlice::new(uaccess::UserPtr::from_addr(addr), data.len())
            .writer()
            .write_slice(data)
    }
}

/// Kernel threads for KUnit tests that need a second CPU.
#[cfg(CONFIG_KUNIT)]
pub(crate) mod kunit_thread {
    use core::ffi::c_void;
    use kernel::{bindings, ffi::c_int, prelude::*};

    /// A kernel thread, stopped and waited for when dropped, so no code of
    /// the test runs after its test.
    pub(crate) struct Thread(*mut bindings::task_struct);

    impl Thread {
        /// Runs `f(data)` on a new kernel thread named `name`.
        ///
        /// # Safety
        ///
        /// `f` must not return before [`should_stop`] is true, and `data`
        /// must stay valid for it until the thread is dropped.
        pub(crate) unsafe fn spawn(
            f: unsafe extern "C" fn(*mut c_void) -> c_int,
            data: *mut c_void,
            name: &CStr,
        ) -> Result<Self> {
            // SAFETY: `f` has the kthread signature; `name` is a C string.
            let task = unsafe {
                bindings::kthread_create_on_node(
                    Some(f),
                    data,
                    bindings::NUMA_NO_NODE,
                    name.as_char_ptr(),
                )
            };
            kernel::error::from_err_ptr(task)?;
            // SAFETY: A new kthread, not yet woken.
            unsafe { bindings::wake_up_process(task) };
            Ok(Self(task))
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            // SAFETY: Our kthread, which runs until asked to stop (`spawn`).
            unsafe { bindings::kthread_stop(self.0) };
        }
    }

    /// Whether the current thread was asked to stop.
    pub(crate) fn should_stop() -> bool {
        // SAFETY: Called from a kthread.
        unsafe { bindings::kthread_should_stop() }
    }
}

#[kernel::prelude::kunit_tests(hmm_rs_core)]
mod tests {
    use super::*;
    use kernel::current;

    #[test]
    fn one_notifier_per_mm_and_none_left_after_1000_cycles() -> Result {
        kunit_mm::attach()?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let before = LIVE_MMS.load(Relaxed);
        for _ in 0..1000 {
            let a = HmmMmRef::get(mm)?;
            let b = HmmMmRef::get(mm)?;
            // One notifier per mm. (Dropped ones are freed only after an SRCU
            // grace period, so more than one may exist until then.)
            assert!(core::ptr::eq(&*a, &*b));
            drop(a);
            drop(b);
        }
        // SAFETY: Process context.
        unsafe { bindings::mmu_notifier_synchronize() };
        assert_eq!(LIVE_MMS.load(Relaxed), before);
        Ok(())
    }

    #[test]
    fn munmap_is_seen_as_munmap() -> Result {
        let len = 16 * 4096;
        let addr = kunit_mm::mmap(len, kunit_mm::PROT_READ | kunit_mm::PROT_WRITE)?;
        let task = current!();
        let hmm = HmmMmRef::get(task.mm().ok_or(EINVAL)?)?;
        let before = hmm.events(HmmEventType::Munmap);
        kunit_mm::munmap(addr, len)?;
        assert!(hmm.events(HmmEventType::Munmap) > before);
        Ok(())
    }

    #[test]
    fn c_header_flags_match_the_table() {
        use crate::hmm_pt::PtFlags;
        // SAFETY: A constant array of the shim.
        let c = unsafe { shim::hmm_rs_c_pt_flags };
        let rust = [
            PtFlags::VALID,
            PtFlags::WRITE,
            PtFlags::DIRTY,
            PtFlags::DEVICE,
            PtFlags::EXCLUSIVE,
        ];
        for (c, r) in c.iter().zip(rust) {
            assert_eq!(*c, r.bits());
        }
        use crate::hmm_mirror::snap;
        // SAFETY: A constant array of the shim.
        let c = unsafe { shim::hmm_rs_c_snap_flags };
        assert_eq!(
            c,
            [
                snap::VALID,
                snap::WRITE,
                snap::ERROR,
                snap::ZERO,
                snap::DEVICE,
                snap::COHERENT,
                snap::REMOTE
            ]
        );
    }
}
